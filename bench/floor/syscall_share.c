// How this machine accounts a system call: getppid(2) in a loop (the least a system call does),
// then the process's user and system time from getrusage(2). On bare metal nearly all of it is
// system time; where part of each call's entry and exit is charged to user time (a guest whose
// kernel is entered through the hypervisor, with tick-based accounting), a server's "user share"
// grows with its system calls, whatever its own instructions cost (issue 17, target 2).
//   syscall_share [CALLS]     (default 3000000)
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

static double seconds(struct timeval t) { return (double)t.tv_sec + (double)t.tv_usec / 1e6; }

int main(int argc, char** argv) {
  const long calls = argc > 1 ? atol(argv[1]) : 3000000;
  if (calls <= 0) {
    fprintf(stderr, "usage: syscall_share [CALLS]   (CALLS > 0)\n");
    return 2;
  }
  for (long i = 0; i < calls; ++i) syscall(SYS_getppid);
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  const double user = seconds(usage.ru_utime), system = seconds(usage.ru_stime);
  printf("%ld getppid calls: %.0f ns each, %.1f %% of it accounted as user time\n", calls,
         (user + system) * 1e9 / (double)calls, 100 * user / (user + system));
  return 0;
}
