//! The command line's help texts (`llmspell --help`, `llmspell COMMAND --help`).

pub const HELP: &str = "\
llmspell — Lua 5.4 in a shared, always-running Jupyter kernel

USAGE:
  llmspell [--kernel ID | --connect FILE] run SCRIPT [ARGS...]   run a Lua file (\"-\": from stdin)
  llmspell [--kernel ID | --connect FILE] exec CODE              run code in the shared session
  llmspell [--kernel ID | --connect FILE] repl                   interactive session on the kernel
  llmspell kernel start|stop|list|status|interrupt|install ...   manage kernels (llmspell kernel --help)
  llmspell state get|set|delete|list|clear|export|import|repair  the persistent store (llmspell state --help)
  llmspell dap                                                   a Debug Adapter Protocol server on stdio (llmspell dap --help)

OPTIONS:
  --kernel ID           kernel id to use or start (default: default)
  --connect FILE        use the kernel of this Jupyter connection file; never start one
  --idle-timeout SECS   idle timeout of a kernel started on demand (default: $LLMSPELL_IDLE_TIMEOUT or 3600; 0 = never)
  -h, --help            this help
  -V, --version         the version

run, exec and repl start the kernel when none is alive and leave it running for the next command.
run is `lua SCRIPT` in a process of its own (your cwd, environment, terminal); exec and repl share one session.
State set with state.set() persists in $LLMSPELL_HOME/state.json (default ~/.llmspell).

EXIT CODES: 0 ok, 1 Lua error or kernel failure, 2 bad command line, 130 interrupted (Ctrl-C),
            or the code a script passed to os.exit.
";

pub const KERNEL_HELP: &str = "\
llmspell kernel — manage kernels

USAGE:
  llmspell kernel start [--id ID] [--connection-file PATH] [--ip IP] [--daemon]
                        [--memory-limit MB] [--idle-timeout SECS] [--input-timeout SECS] [--max-message-mb MB]
      Run a kernel. With --connection-file (how Jupyter launches kernels) it binds what that file says;
      otherwise it picks free ports and writes $LLMSPELL_HOME/kernels/ID.json (default id: default).
      --daemon detaches it and prints its id and connection file. In the foreground it logs to stderr.
  llmspell kernel stop [ID | --all]     shut down (control channel, then SIGTERM, then SIGKILL);
                                        exit 1 if the kernel ID is not running
  llmspell kernel list                  live kernels: id, pid, uptime, busy/idle (and whose request), address,
                                        connection file
  llmspell kernel status [ID]           running and busy or idle: exit 0; not running or not answering: exit 1
  llmspell kernel interrupt [ID]        interrupt whatever the kernel runs (as Jupyter's interrupt button)
  llmspell kernel install [--user | --prefix DIR] [--name NAME]
      Write a Jupyter kernelspec for this binary (default: --user, name llmspell).

Logging: LLMSPELL_LOG=error|warn|info|debug|trace (default info).
";

pub const RUN_HELP: &str = "\
llmspell run SCRIPT [ARGS...] — run a Lua file as `lua SCRIPT ARGS...` does

The script runs in a fresh process forked by the kernel (started if needed), with your working
directory, environment, terminal and exit status; it shares only `state` with the session and other
runs. SCRIPT - reads the script from stdin. Options of llmspell (--kernel, --connect) may come before
SCRIPT; everything after it is the script's `arg`.

EXAMPLES:
  llmspell run report.lua --since 2026-01-01     arg[1] is \"--since\"
  echo 'print(io.read())' | llmspell run - < names.txt
  llmspell --kernel work run job.lua            through the kernel `work` (started if needed)
";

pub const EXEC_HELP: &str = "\
llmspell exec CODE — run CODE in the shared session (what `repl` and Jupyter clients see)

Prints the output, and the value of a trailing expression. CODE - reads the code from stdin. Exit
codes: 0 ok, 1 a Lua error, 130 interrupted (Ctrl-C interrupts only this command's own code; if it
was still queued behind another client's cell, it never runs).

EXAMPLES:
  llmspell exec 'x = 41'
  llmspell exec 'x + 1'                         42: the session keeps x
  llmspell exec --kernel work - < setup.lua     options may follow the command; -- ends them
";

pub const REPL_HELP: &str = "\
llmspell repl — interactive Lua on the shared session

Multi-line input continues while the code is unfinished (as `lua -i`); Tab completes; history is kept
in $LLMSPELL_HOME/history. `exit`, `quit`, .exit or Ctrl-D leave; .help lists the other dot
commands. With stdin not a terminal it reads cells from it without prompts.

EXAMPLES:
  llmspell repl
  printf 'x = 1\\nprint(x + 1)\\n' | llmspell repl
";

pub const DAP_HELP: &str = "\
llmspell dap — debug a Lua script from an editor (Debug Adapter Protocol on stdin/stdout)

USAGE:
  llmspell dap
      Speaks DAP (Content-Length framed JSON) on stdin and stdout, for VS Code, nvim-dap and other
      DAP clients. The client's `launch` names the script: {program, args, cwd, env, stopOnEntry}.
      The script runs in this process in a fresh Lua state (not through the kernel); its output,
      and its child processes' output, arrive as output events; io.read sees end of input.
      Breakpoints (conditions, hit counts, logpoints) in the script and the modules it requires,
      stepping, variables, evaluate, break on uncaught errors; the exit code in the exited event.
";
