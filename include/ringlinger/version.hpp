// The version of the library a program runs against, which may be newer than the headers it was
// built with (RINGLINGER_VERSION_* in version.h). Policy: docs/PACKAGING.md.
#pragma once

#include <string_view>

#include "ringlinger/version.h"

namespace ringlinger {

// "0.2.0": the running library's version.
std::string_view version() noexcept;
int version_major() noexcept;
int version_minor() noexcept;
int version_patch() noexcept;

}  // namespace ringlinger
