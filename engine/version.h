#pragma once
namespace vit {
// "cpu" or "cpu+cuda": which backends this build holds.
const char* build_backends();
}
