// Typed errors and checked-call macros. Every failure in the core becomes one
// of these exceptions; bindings.cc maps them onto the Python classes.
#pragma once

#include <stdexcept>
#include <string>

namespace rr {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what), msg_(what) {}
  const char* what() const noexcept override { return msg_.c_str(); }
  // Layers add what they know (ring step, rank, sequence number) as the
  // exception travels up, so the final message names every party.
  void addContext(const std::string& ctx) { msg_ = ctx + ": " + msg_; }

 private:
  std::string msg_;
};

// A peer did not answer in time. The communicator is aborted.
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// Ranks disagree on the shape of a collective.
class MismatchError : public Error {
 public:
  using Error::Error;
};

// A bad argument detected in the core (Python checks most of them first).
class ArgumentError : public Error {
 public:
  using Error::Error;
};

}  // namespace rr

#define RR_STRINGIFY2(x) #x
#define RR_STRINGIFY(x) RR_STRINGIFY2(x)

#define RR_THROW(ExcType, msg_expr)                                        \
  do {                                                                     \
    std::string rr_msg_ = std::string() + msg_expr;                        \
    throw ExcType(rr_msg_);                                                \
  } while (0)

#define RR_CHECK_ARG(cond, msg_expr)                                       \
  do {                                                                     \
    if (!(cond)) RR_THROW(::rr::ArgumentError, msg_expr);                  \
  } while (0)

namespace rr {

// A bad argument whose kind is wrong (an op the dtype has no meaning for).
// The bindings raise it as TypeError.
class TypeArgError : public ArgumentError {
 public:
  using ArgumentError::ArgumentError;
};

// A wait was abandoned because the process was interrupted (Ctrl-C). The
// communicator is aborted; the bindings re-raise the Python exception.
class Interrupted : public Error {
 public:
  using Error::Error;
};

}  // namespace rr
