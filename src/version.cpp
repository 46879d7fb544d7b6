// The running library's version, for the C++ (version.hpp) and C (ringlinger.h) APIs: the macros
// as they were when the library was built.
#include "ringlinger/version.hpp"

#include "ringlinger/ringlinger.h"

namespace ringlinger {

std::string_view version() noexcept { return RINGLINGER_VERSION; }
int version_major() noexcept { return RINGLINGER_VERSION_MAJOR; }
int version_minor() noexcept { return RINGLINGER_VERSION_MINOR; }
int version_patch() noexcept { return RINGLINGER_VERSION_PATCH; }

}  // namespace ringlinger

const char *rl_version(void) { return RINGLINGER_VERSION; }
int rl_version_major(void) { return RINGLINGER_VERSION_MAJOR; }
int rl_version_minor(void) { return RINGLINGER_VERSION_MINOR; }
int rl_version_patch(void) { return RINGLINGER_VERSION_PATCH; }
