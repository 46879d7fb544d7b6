// How Manager::listen opens a listening socket.
#pragma once

namespace ringlinger {

struct ListenOptions {
  // listen(2)'s backlog: how many connections the kernel keeps waiting to be accepted.
  int backlog = 4096;
  // SO_REUSEPORT before bind: several managers (one per thread) can listen on the same port, and
  // the kernel spreads connections among them.
  bool reuse_port = false;
  // TCP_DEFER_ACCEPT, one second (nginx's `listen ... deferred`): the kernel hands a connection
  // over only once its first bytes have arrived, so its first receive finds them instead of
  // waiting (no poll armed, no wake-up: about 1 us less CPU per connection on loopback,
  // docs/PERFORMANCE.md). For protocols where the client speaks first, such as HTTP. A connection
  // that sends nothing is handed over when it answers the SYN-ACK the kernel sends again after a
  // second (later if that is lost), and only then do on_accept and the timeouts see it.
  bool defer_accept = false;
};

}  // namespace ringlinger
