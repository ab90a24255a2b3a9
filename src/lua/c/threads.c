/* The Lua threads (coroutines) alive in this process, so an interrupt can set its hook on the one
 * that runs (src/lua/interrupt.rs). Lua calls llmspell_thread_created/freed from lstate.c; another
 * thread calls llmspell_hook_threads, so the list is under a mutex. */
#include <pthread.h>
#include <stdlib.h>

typedef void (*hook_setter)(void *L, void *hook, int mask, int count);

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static void **threads;
static size_t count, capacity;

void llmspell_thread_created(void *L1) {
    pthread_mutex_lock(&lock);
    if (count == capacity) {
        size_t grown = capacity ? capacity * 2 : 64;
        void **more = realloc(threads, grown * sizeof *threads);
        if (!more) { /* out of memory: this thread is not reachable by an interrupt */
            pthread_mutex_unlock(&lock);
            return;
        }
        threads = more;
        capacity = grown;
    }
    threads[count++] = L1;
    pthread_mutex_unlock(&lock);
}

void llmspell_thread_freed(void *L1) {
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < count; i++) {
        if (threads[i] == L1) {
            threads[i] = threads[--count];
            break;
        }
    }
    pthread_mutex_unlock(&lock);
}

/* Calls set(L, hook, mask, n) for every live thread; a thread cannot be freed meanwhile. */
void llmspell_hook_threads(hook_setter set, void *hook, int mask, int n) {
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < count; i++) set(threads[i], hook, mask, n);
    pthread_mutex_unlock(&lock);
}

/* Whether L1 is a live coroutine (the debugger's step may name one that has since been freed). */
int llmspell_thread_listed(void *L1) {
    int found = 0;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < count && !found; i++) found = threads[i] == L1;
    pthread_mutex_unlock(&lock);
    return found;
}
