/* Included into every C file of the build (.cargo/config.toml): Lua's lstate.c calls these when it
 * creates and frees a thread (coroutine), so the kernel knows every thread an interrupt may have to
 * reach (src/lua/interrupt.rs). In other C files the two macros are simply unused. Assembly sources
 * (ring's, for TLS) get it too through the same CFLAGS: they must see nothing. */
#if !defined(LLMSPELL_THREADS_H) && !defined(__ASSEMBLER__)
#define LLMSPELL_THREADS_H
void llmspell_thread_created(void *L1);
void llmspell_thread_freed(void *L1);
#define luai_userstatethread(L, L1) llmspell_thread_created(L1)
#define luai_userstatefree(L, L1) llmspell_thread_freed(L1)
#endif
