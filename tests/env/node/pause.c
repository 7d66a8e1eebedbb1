/* The node's sandbox ("pause") process: holds the pod's namespaces, reaps zombies, and exits
 * on SIGTERM/SIGINT. Built static by tests/env/setup.sh (SIGNALMAN_NODE=1), because no
 * registry is reachable to pull the usual image from. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { _exit(0); }

static void reap(int sig) {
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
}

int main(void) {
	struct sigaction stop = {.sa_handler = quit}, child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
	sigaction(SIGTERM, &stop, NULL);
	sigaction(SIGINT, &stop, NULL);
	sigaction(SIGCHLD, &child, NULL);
	for (;;)
		pause();
}
