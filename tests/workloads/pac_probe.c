/* Prints the return address saved in its own frame record next to the real one. Built with
 * -mbranch-protection=pac-ret on arm64: they differ when the CPU and kernel sign return
 * addresses, which is what makes the VM's "signed return addresses" scenarios prove the
 * unwinder strips pointer-authentication codes. */
#include <stdint.h>
#include <stdio.h>

__attribute__((noinline)) static void probe(void) {
    uintptr_t *frame = __builtin_frame_address(0);
    printf("saved=%#lx returns_to=%#lx\n", (unsigned long)frame[1],
           (unsigned long)__builtin_extract_return_addr(__builtin_return_address(0)));
}

int main(void) {
    probe();
    return 0;
}
