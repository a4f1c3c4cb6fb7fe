/* WASI command: prints the last argv entry unchanged. */
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc >= 1)
        fputs(argv[argc - 1], stdout);
    return 0;
}
