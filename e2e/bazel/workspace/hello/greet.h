#ifndef HELLO_GREET_H_
#define HELLO_GREET_H_

#include <string>

std::string Greeting(const std::string& who);

#endif  // HELLO_GREET_H_
