#include "hello/greet.h"

#include "hello/gen/message.h"

std::string Greeting(const std::string& who) {
  return std::string(GREETING) + ", " + who + "!";
}
