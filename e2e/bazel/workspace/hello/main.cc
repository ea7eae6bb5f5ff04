#include <iostream>

#include "hello/greet.h"

int main(int argc, char** argv) {
  std::cout << Greeting(argc > 1 ? argv[1] : "bitzel") << std::endl;
  return 0;
}
