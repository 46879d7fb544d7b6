// The main of every test binary: GoogleTest, plus a check after each test that the process holds
// exactly the fds it held before the test (no socket, ring or pipe leaked).
#include <dirent.h>
#include <gtest/gtest.h>

namespace {

int count_open_fds() {
  DIR* directory = opendir("/proc/self/fd");
  if (directory == nullptr) return -1;
  int count = 0;
  while (readdir(directory) != nullptr) ++count;
  closedir(directory);
  return count;
}

class FdLeakCheck : public testing::EmptyTestEventListener {
  void OnTestStart(const testing::TestInfo&) override { before_ = count_open_fds(); }
  void OnTestEnd(const testing::TestInfo& info) override {
    const int after = count_open_fds();
    if (after != before_) {
      ADD_FAILURE() << info.test_suite_name() << "." << info.name() << " leaked fds: " << before_
                    << " open before, " << after << " after";
    }
  }
  int before_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  testing::UnitTest::GetInstance()->listeners().Append(new FdLeakCheck);
  return RUN_ALL_TESTS();
}
