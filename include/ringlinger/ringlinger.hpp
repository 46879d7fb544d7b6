// Everything public in one include.
#pragma once

#include "ringlinger/address.hpp"
#include "ringlinger/config.hpp"
#include "ringlinger/connection_id.hpp"
#include "ringlinger/listen_options.hpp"
#include "ringlinger/manager.hpp"
#include "ringlinger/outcome.hpp"
#include "ringlinger/probe.hpp"
#include "ringlinger/state.hpp"
#include "ringlinger/stats.hpp"
#include "ringlinger/version.hpp"
