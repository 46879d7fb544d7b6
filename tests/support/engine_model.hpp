// The engine model: a driver, an independent model and a checker for detail::Engine behind
// FakeIo, shared by the seeded gtest fuzzer (engine_fuzz_test.cpp, decisions from a PRNG) and
// the libFuzzer target (fuzz/engine_fuzzer.cpp, decisions from the fuzzer's input bytes). Every
// decision goes through Choices (choices.hpp); nothing else differs between the two.
//
// After EVERY event the checker asserts (see engine_fuzz_test.cpp for the full list):
//   - at most one request of each op per connection, the engine's in_flight bits are exactly
//     what the fake holds for that slot, and nothing is submitted after a connection's close,
//     which itself waits until nothing else is in flight on the fd (never closed twice, never
//     closed with a request in flight);
//   - SHUT_WR only after every queued byte was sent, sends in order with the right bytes, and
//     bytes accounted: sent + still queued = what send()/send_view() accepted (= queued_bytes());
//   - the half-close (shutdown_write()): shutdown(2) while open only after it, once every queued
//     byte was sent, exactly one SHUT_WR per connection (close() after it issues none), no send
//     accepted after it; pause_receive(): no delivering receive started while paused, and
//     resume_receive() starts one again; on_send_drained only inside a send completion that
//     left an open connection with nothing queued, and always then;
//   - the state, the outcome, the timers and the CloseReport are the ones the model predicts;
//   - on_closed exactly once per adopted connection, inside its close completion;
//   - a completion of an earlier connection in a reused slot (an old generation) changes nothing.
//
// The parts, by idea (engine_model/):
//   basics.hpp        time, connection keys, error classes, the variants, a run's options
//   connection.hpp    Model: what the model expects of one adopted connection
//   coverage.hpp      what the fuzzer reached, summed over runs
//   fuzzer.hpp        the one class the parts below define (they share one state)
//   expectations.hpp  the model's predictions for every submission and synchronous call
//   callbacks.hpp     the engine's callbacks, checked, and reentrant calls from them
//   report.hpp        violations, the recent events, every CloseReport checked
//   driver.hpp        the events: API calls, completions and their results, time
//   invariants.hpp    the checks after every event
#pragma once

#include "engine_model/basics.hpp"
#include "engine_model/callbacks.hpp"
#include "engine_model/connection.hpp"
#include "engine_model/coverage.hpp"
#include "engine_model/driver.hpp"
#include "engine_model/expectations.hpp"
#include "engine_model/fuzzer.hpp"
#include "engine_model/invariants.hpp"
#include "engine_model/report.hpp"
