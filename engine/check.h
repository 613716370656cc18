// Error handling shared by every part of the engine: one exception type whose message is the one line
// a user sees (what failed, where, and the fix), plus checking macros that add file:line.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace vit {

// A user-facing error: the message is printed as one line by the program's main and the exit code is 1.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... A>
std::string cat(const A&... a) {
  std::ostringstream s;
  (s << ... << a);
  return s.str();
}
}  // namespace detail

template <class... A>
[[noreturn]] void fail(const A&... a) {
  throw Error(detail::cat(a...));
}

}  // namespace vit

// Internal invariant (a bug if it fires), reported with file:line.
#define VIT_ASSERT(cond, ...)                                                                     \
  do {                                                                                            \
    if (!(cond)) ::vit::fail(__FILE__, ":", __LINE__, ": internal error: ", #cond, " ", ##__VA_ARGS__); \
  } while (0)

// User-facing check: the message should name the input (file, key, value) and the fix.
#define VIT_REQUIRE(cond, ...)                                                                    \
  do {                                                                                            \
    if (!(cond)) ::vit::fail(__VA_ARGS__);                                                        \
  } while (0)

#define MPI_CHECK(call)                                                                           \
  do {                                                                                            \
    int mpi_rc_ = (call);                                                                         \
    if (mpi_rc_ != MPI_SUCCESS) {                                                                 \
      char mpi_msg_[MPI_MAX_ERROR_STRING]; int mpi_len_ = 0;                                      \
      MPI_Error_string(mpi_rc_, mpi_msg_, &mpi_len_);                                             \
      ::vit::fail(__FILE__, ":", __LINE__, ": ", #call, " failed: ", std::string(mpi_msg_, mpi_len_)); \
    }                                                                                             \
  } while (0)
