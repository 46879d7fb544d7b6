// probe_io_uring(): what this kernel offers ringlinger, found by asking it, never by version.
//
// Steps, each on a small ring that is torn down before the function returns:
//   1. io_uring_setup with no flags: does io_uring work at all here? If not, why (errno).
//   2. each setup flag ringlinger uses, on a ring of its own (with the one flag it depends on:
//      TASKRUN_FLAG needs COOP_TASKRUN, DEFER_TASKRUN needs SINGLE_ISSUER).
//   3. the feature bits io_uring_setup reported for the plain ring.
//   4. the opcodes, from IORING_REGISTER_PROBE (io_uring_get_probe_ring).
//   5. registering (and unregistering) a small provided-buffer ring.
//   6. a multishot receive with a total byte limit (receive_limit.hpp).
// Nothing throws out of here: a failure to allocate ends the probe with what is known so far.
#include "ringlinger/probe.hpp"

#include <liburing.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kernel/receive_limit.hpp"

namespace ringlinger {
namespace {

// Feature bits newer than liburing 2.3's header (values from the kernel's
// include/uapi/linux/io_uring.h).
constexpr unsigned kFeatureRegisterRegisteredRing = 1u << 13;  // IORING_FEAT_REG_REG_RING, 6.3
constexpr unsigned kFeatureRecvSendBundle = 1u << 14;          // IORING_FEAT_RECVSEND_BUNDLE, 6.10
constexpr unsigned kFeatureMinTimeout = 1u << 15;              // IORING_FEAT_MIN_TIMEOUT, 6.12

// The opcodes are kernel ABI numbers; liburing 2.3's enum has every one we probe. Pin the numbers
// so an older or newer header that disagrees breaks the build instead of probing the wrong op.
static_assert(IORING_OP_NOP == 0 && IORING_OP_POLL_ADD == 6 && IORING_OP_ACCEPT == 13 &&
              IORING_OP_ASYNC_CANCEL == 14 && IORING_OP_CLOSE == 19 && IORING_OP_SEND == 26 &&
              IORING_OP_RECV == 27 && IORING_OP_PROVIDE_BUFFERS == 31 &&
              IORING_OP_SHUTDOWN == 34 && IORING_OP_SOCKET == 45 && IORING_OP_URING_CMD == 46 &&
              IORING_OP_SEND_ZC == 47);

constexpr unsigned kProbeEntries = 8;  // SQ entries of every probe ring: the smallest useful

struct NamedBits {
  const char* name;
  unsigned bits;      // what is reported
  unsigned needs;     // set together with `bits`, because the kernel rejects `bits` alone
};

constexpr NamedBits kSetupFlags[] = {
    {"SUBMIT_ALL", IORING_SETUP_SUBMIT_ALL, 0},
    {"CQSIZE", IORING_SETUP_CQSIZE, 0},
    {"COOP_TASKRUN", IORING_SETUP_COOP_TASKRUN, 0},
    // io_uring_create(): TASKRUN_FLAG without COOP_TASKRUN or DEFER_TASKRUN is -EINVAL.
    {"TASKRUN_FLAG", IORING_SETUP_TASKRUN_FLAG, IORING_SETUP_COOP_TASKRUN},
    {"SINGLE_ISSUER", IORING_SETUP_SINGLE_ISSUER, 0},
    // io_uring_create(): DEFER_TASKRUN without SINGLE_ISSUER is -EINVAL.
    {"DEFER_TASKRUN", IORING_SETUP_DEFER_TASKRUN, IORING_SETUP_SINGLE_ISSUER},
};

constexpr NamedBits kFeatures[] = {
    {"NODROP", IORING_FEAT_NODROP, 0},
    {"EXT_ARG", IORING_FEAT_EXT_ARG, 0},
    {"FAST_POLL", IORING_FEAT_FAST_POLL, 0},
    {"NATIVE_WORKERS", IORING_FEAT_NATIVE_WORKERS, 0},
    {"RSRC_TAGS", IORING_FEAT_RSRC_TAGS, 0},
    {"CQE_SKIP", IORING_FEAT_CQE_SKIP, 0},
    {"LINKED_FILE", IORING_FEAT_LINKED_FILE, 0},
    {"REG_REG_RING", kFeatureRegisterRegisteredRing, 0},
    {"RECVSEND_BUNDLE", kFeatureRecvSendBundle, 0},
    {"MIN_TIMEOUT", kFeatureMinTimeout, 0},
};

// The features the io_uring backend cannot run without (kOpcodes says it for each opcode).
constexpr std::string_view kRequiredFeatures[] = {"NODROP", "EXT_ARG"};

struct NamedOpcode {
  const char* name;
  int opcode;
  bool required;  // the io_uring backend cannot run without it
};

constexpr NamedOpcode kOpcodes[] = {
    {"ACCEPT", IORING_OP_ACCEPT, true},
    {"RECV", IORING_OP_RECV, true},
    {"SEND", IORING_OP_SEND, true},
    {"SHUTDOWN", IORING_OP_SHUTDOWN, false},  // `--shutdown syscall` does without it
    {"CLOSE", IORING_OP_CLOSE, true},
    {"ASYNC_CANCEL", IORING_OP_ASYNC_CANCEL, true},
    {"POLL_ADD", IORING_OP_POLL_ADD, true},  // a listener waits with a multishot poll
    {"NOP", IORING_OP_NOP, false},
    {"PROVIDE_BUFFERS", IORING_OP_PROVIDE_BUFFERS, false},
    {"SEND_ZC", IORING_OP_SEND_ZC, false},
    {"SOCKET", IORING_OP_SOCKET, false},
    {"URING_CMD", IORING_OP_URING_CMD, false},
};

// A ring set up in the constructor and torn down (its fd closed) in the destructor.
class ProbeRing {
 public:
  explicit ProbeRing(unsigned flags) noexcept {
    io_uring_params params{};
    params.flags = flags;
    params.cq_entries = kProbeEntries * 4;  // read by the kernel only with IORING_SETUP_CQSIZE
    result_ = io_uring_queue_init_params(kProbeEntries, &ring_, &params);
    features_ = params.features;
  }
  ~ProbeRing() {
    if (result_ == 0) io_uring_queue_exit(&ring_);
  }
  ProbeRing(const ProbeRing&) = delete;
  ProbeRing& operator=(const ProbeRing&) = delete;

  bool ok() const noexcept { return result_ == 0; }
  int error() const noexcept { return -result_; }  // positive errno, 0 when ok
  unsigned features() const noexcept { return features_; }
  io_uring& raw() noexcept { return ring_; }

 private:
  io_uring ring_{};
  int result_ = -EINVAL;
  unsigned features_ = 0;
};

// kernel.io_uring_disabled (6.6+): 0 allowed, 1 root and kernel.io_uring_group only, 2 nobody;
// -1 when the sysctl does not exist or cannot be read.
int read_io_uring_disabled() noexcept {
  std::FILE* file = std::fopen("/proc/sys/kernel/io_uring_disabled", "re");
  if (file == nullptr) return -1;
  int value = -1;
  if (std::fscanf(file, "%d", &value) != 1) value = -1;
  std::fclose(file);
  return value;
}

std::string explain_setup_error(int error) {
  switch (error) {
    case EPERM: {
      const int disabled = read_io_uring_disabled();
      const std::string seccomp = "a seccomp filter such as a container runtime's";
      switch (disabled) {
        case -1:  // no such sysctl (kernel before 6.6)
          return "io_uring is not permitted here (" + seccomp + ")";
        case 0:  // the sysctl allows it: someone else refused
          return "io_uring is not permitted here (sysctl kernel.io_uring_disabled = 0 allows it, "
                 "so " + seccomp + ", or a security module)";
        case 1:
          return "io_uring is not permitted here (sysctl kernel.io_uring_disabled = 1: only root "
                 "and kernel.io_uring_group, or " + seccomp + ")";
        default:
          return "io_uring is not permitted here (sysctl kernel.io_uring_disabled = " +
                 std::to_string(disabled) + ", or " + seccomp + ")";
      }
    }
    case ENOSYS:
      return "io_uring_setup does not exist here (kernel built without CONFIG_IO_URING, or a "
             "seccomp filter answering ENOSYS)";
    case ENOMEM:
      return "not enough memory for a ring (memory cgroup limit, or RLIMIT_MEMLOCK on kernels "
             "before 5.12)";
    case EINVAL:
      return "the kernel rejected a plain io_uring_setup (kernel too old?)";
    default:
      return "io_uring_setup failed (errno " + std::to_string(error) + ")";
  }
}

// A provided-buffer ring registered in group 0 of a probe ring (IORING_REGISTER_PBUF_RING, 5.19+),
// on one page of its own: unregistered and unmapped in the destructor.
class ProbeBufferRing {
 public:
  ProbeBufferRing(io_uring& ring, unsigned entries) noexcept
      : ring_(ring), page_(static_cast<std::size_t>(sysconf(_SC_PAGESIZE))) {
    memory_ = mmap(nullptr, page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory_ == MAP_FAILED) return;
    io_uring_buf_reg registration{};
    registration.ring_addr = reinterpret_cast<std::uint64_t>(memory_);
    registration.ring_entries = entries;
    registration.bgid = kGroup;
    registered_ = io_uring_register_buf_ring(&ring_, &registration, 0) == 0;
  }
  ~ProbeBufferRing() {
    if (registered_) io_uring_unregister_buf_ring(&ring_, kGroup);
    if (memory_ != MAP_FAILED) munmap(memory_, page_);
  }
  ProbeBufferRing(const ProbeBufferRing&) = delete;
  ProbeBufferRing& operator=(const ProbeBufferRing&) = delete;

  static constexpr std::uint16_t kGroup = 0;
  bool ok() const noexcept { return registered_; }
  io_uring_buf_ring* entries() const noexcept { return static_cast<io_uring_buf_ring*>(memory_); }

 private:
  io_uring& ring_;
  std::size_t page_;
  void* memory_ = MAP_FAILED;
  bool registered_ = false;
};

bool can_register_buffer_ring(io_uring& ring) noexcept { return ProbeBufferRing(ring, 8).ok(); }

// multishot_receive_stops_at_limit()'s question, on `ring` and a connected socket pair: one
// multishot receive limited to 1 byte in all, from a socket holding 2. A receive still armed (a
// kernel that ignored the limit) finds no buffer once the ring is unregistered, and ends with
// the probe ring.
bool receive_stops_at_limit(io_uring& ring, const int (&sockets)[2]) noexcept {
  constexpr unsigned kEntries = 2;
  static constexpr char kTwoBytes[] = {'a', 'b'};
  if (::send(sockets[1], kTwoBytes, sizeof(kTwoBytes), MSG_NOSIGNAL) != sizeof(kTwoBytes)) {
    return false;
  }
  char area[64];  // both entries point here; declared first, so that it outlives the ring
  const ProbeBufferRing buffers(ring, kEntries);
  if (!buffers.ok()) return false;
  io_uring_buf_ring_init(buffers.entries());
  for (unsigned id = 0; id < kEntries; ++id) {
    io_uring_buf_ring_add(buffers.entries(), area, sizeof(area), static_cast<unsigned short>(id),
                          io_uring_buf_ring_mask(kEntries), static_cast<int>(id));
  }
  io_uring_buf_ring_advance(buffers.entries(), kEntries);
  io_uring_sqe* sqe = io_uring_get_sqe(&ring);
  io_uring_prep_recv_multishot(sqe, sockets[0], nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = ProbeBufferRing::kGroup;
  sqe->file_index = 1;  // the total limit: sqe->optlen in newer headers (6.x), unnamed in 2.3's
  io_uring_cqe* cqe = nullptr;
  __kernel_timespec timeout{1, 0};  // the bytes are there: it completes during the submit
  if (io_uring_submit(&ring) != 1 || io_uring_wait_cqe_timeout(&ring, &cqe, &timeout) != 0) {
    return false;
  }
  const bool stopped = cqe->res > 0 && (cqe->flags & IORING_CQE_F_MORE) == 0;
  io_uring_cqe_seen(&ring, cqe);
  return stopped;
}

bool lookup(const std::vector<std::pair<std::string, bool>>& table, std::string_view name) {
  for (const auto& [entry, supported] : table) {
    if (entry == name) return supported;
  }
  return false;
}

// Fills `support` (whose vectors are already sized with every name set to false).
void probe_into(IoUringSupport& support) {
  ProbeRing plain(0);
  if (!plain.ok()) {
    support.setup_error = plain.error();
    support.reason = explain_setup_error(plain.error());
    return;
  }
  support.available = true;

  for (std::size_t i = 0; i < std::size(kSetupFlags); ++i) {
    const ProbeRing ring(kSetupFlags[i].bits | kSetupFlags[i].needs);
    support.setup_flags[i].second = ring.ok();
  }
  for (std::size_t i = 0; i < std::size(kFeatures); ++i) {
    support.features[i].second = (plain.features() & kFeatures[i].bits) != 0;
  }
  if (io_uring_probe* probe = io_uring_get_probe_ring(&plain.raw())) {
    for (std::size_t i = 0; i < std::size(kOpcodes); ++i) {
      support.opcodes[i].second = io_uring_opcode_supported(probe, kOpcodes[i].opcode) != 0;
    }
    io_uring_free_probe(probe);
  }  // else IORING_REGISTER_PROBE failed (kernel < 5.6): every opcode stays "no"
  support.provided_buffer_ring = can_register_buffer_ring(plain.raw());
  support.multishot_drain = detail::multishot_receive_stops_at_limit();

  std::string missing;
  const auto require = [&](bool present, const std::string& what) {
    if (present) return;
    if (!missing.empty()) missing += ", ";
    missing += what;
  };
  for (const std::string_view feature : kRequiredFeatures) {
    require(lookup(support.features, feature), "feature " + std::string(feature));
  }
  for (const NamedOpcode& opcode : kOpcodes) {
    if (!opcode.required) continue;
    require(lookup(support.opcodes, opcode.name), std::string("op ") + opcode.name);
  }
  require(support.provided_buffer_ring, "provided buffer rings");
  support.sufficient = missing.empty();
  // Beyond the header's promise (reason only when setup failed): say what is missing, so the
  // fallback can be explained in one place.
  if (!support.sufficient) support.reason = "the kernel lacks " + missing;
}

}  // namespace

namespace detail {

bool multishot_receive_stops_at_limit() noexcept {
  ProbeRing ring(0);
  int sockets[2];
  if (!ring.ok() || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets) != 0) return false;
  const bool stopped = receive_stops_at_limit(ring.raw(), sockets);
  ::close(sockets[0]);
  ::close(sockets[1]);
  return stopped;
}

}  // namespace detail

IoUringSupport probe_io_uring() {
  IoUringSupport support;
  try {
    for (const NamedBits& flag : kSetupFlags) support.setup_flags.emplace_back(flag.name, false);
    for (const NamedBits& feature : kFeatures) support.features.emplace_back(feature.name, false);
    for (const NamedOpcode& opcode : kOpcodes) support.opcodes.emplace_back(opcode.name, false);
    probe_into(support);
  } catch (...) {
    // Only strings and vectors can throw (bad_alloc); every ring and mapping was released by its
    // destructor on the way out. "out of memory" fits std::string's inline buffer: no allocation.
    support.sufficient = false;
    support.reason.assign("out of memory");
  }
  return support;
}

bool io_uring_requires(std::string_view name) noexcept {
  for (const std::string_view feature : kRequiredFeatures) {
    if (feature == name) return true;
  }
  for (const NamedOpcode& opcode : kOpcodes) {
    if (opcode.name == name) return opcode.required;
  }
  return false;
}

}  // namespace ringlinger
