/* ringlinger.h must compile as C99 with -Wpedantic (see meson.build): this file includes it and
 * uses a little of it. */
#include "ringlinger/ringlinger.h"

int c_api_header_c99_check(void);

int c_api_header_c99_check(void) {
  rl_config config;
  rl_config_init(&config);
  return rl_conn_slot((rl_conn_id)config.size) == 0 ? -1 : RL_OUTCOME_COUNT;
}
