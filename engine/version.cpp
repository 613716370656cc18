#include "engine/version.h"
namespace vit {
#if defined(VIT_WITH_CUDA)
const char* build_backends() { return "cpu+cuda"; }
#else
const char* build_backends() { return "cpu"; }
#endif
}  // namespace vit
