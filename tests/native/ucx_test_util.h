// Shared by the UCX transport's standalone self-test and benchmark: argument
// parsing and an all-gather through files, so N plain processes can bootstrap
// without mpirun or a store.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace rrtest {

// --key value pairs; a bare --flag reads as "1".
inline std::map<std::string, std::string> parseArgs(int argc, char** argv) {
  std::map<std::string, std::string> a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0) throw std::runtime_error("unexpected argument " + k);
    k = k.substr(2);
    if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0)
      a[k] = argv[++i];
    else
      a[k] = "1";
  }
  return a;
}

// All-gather of strings through `dir`: each call is one phase. A rank writes
// <dir>/<phase>.<rank> atomically (write, then rename) and reads everyone's.
class FileExchange {
 public:
  FileExchange(std::string dir, int rank, int size, double timeoutS = 60)
      : dir_(std::move(dir)), rank_(rank), size_(size), timeoutS_(timeoutS) {}

  std::vector<std::string> operator()(const std::string& mine) {
    const std::string base = dir_ + "/" + std::to_string(phase_) + ".";
    ++phase_;
    {
      std::string tmp = base + std::to_string(rank_) + ".tmp";
      std::ofstream f(tmp, std::ios::binary);
      f.write(mine.data(), static_cast<std::streamsize>(mine.size()));
      f.close();
      if (std::rename(tmp.c_str(), (base + std::to_string(rank_)).c_str()) != 0)
        throw std::runtime_error("rename failed in " + dir_);
    }
    std::vector<std::string> all(size_);
    auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeoutS_);
    for (int r = 0; r < size_; ++r) {
      const std::string path = base + std::to_string(r);
      struct stat st;
      while (stat(path.c_str(), &st) != 0) {
        if (std::chrono::steady_clock::now() > until)
          throw std::runtime_error("rank " + std::to_string(r) + " never wrote " + path);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      std::ifstream f(path, std::ios::binary);
      all[r].assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
    return all;
  }
  // A barrier is an all-gather of nothing.
  void barrier() { (*this)(std::string()); }

 private:
  std::string dir_;
  int rank_, size_;
  double timeoutS_;
  int phase_ = 0;
};

inline double seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace rrtest
