//! The command line's help texts (`llmspell --help`, `llmspell COMMAND --help`).

pub const HELP: &str = "\
llmspell — Lua 5.4 in a shared, always-running Jupyter kernel

USAGE:
  llmspell [--kernel ID | --connect FILE] run [LUA-OPTIONS] [SCRIPT [ARGS]]   run Lua as `lua` does
  llmspell [--kernel ID | --connect FILE] LUA-OPTION|SCRIPT ...   the same without `run` (see below)
  llmspell [--kernel ID | --connect FILE] exec CODE              run code in the shared session
  llmspell [--kernel ID | --connect FILE] repl                   interactive session on the kernel
  llmspell kernel start|stop|list|status|interrupt|install ...   manage kernels (llmspell kernel --help)
  llmspell state get|set|delete|list|clear|export|import|repair  the persistent store (llmspell state --help)
  llmspell --remote URL [--token T] run|exec|repl|kernel ...     the same, on a Jupyter Server / Kernel Gateway
  llmspell dap                                                   a Debug Adapter Protocol server on stdio (llmspell dap --help)

OPTIONS:
  --kernel ID           kernel id to use or start (default: default)
  --connect FILE        use the kernel of this Jupyter connection file; never start one
  --idle-timeout SECS   idle timeout of a kernel started on demand (default: $LLMSPELL_IDLE_TIMEOUT or 3600; 0 = never)
  --remote URL          use kernels of the Jupyter Server or Kernel Gateway at URL (default: $LLMSPELL_REMOTE);
                        nothing runs locally. --kernel NAME names a remote kernel, remembered per server in
                        $LLMSPELL_HOME/remotes/ and started with the server's llmspell kernelspec
                        ($LLMSPELL_KERNELSPEC) when missing
  --token T             the server's token (default: $LLMSPELL_TOKEN); --token-file FILE reads it from FILE
  --cacert FILE         also trust this PEM CA for https:// servers (besides the system's roots)
  --ws-format json|v1   the websocket format (default: v1.kernel.websocket.jupyter.org if the server offers it)
  -h, --help            this help
  -V, --version         the version

run, exec and repl start the kernel when none is alive and leave it running for the next command.
run is `lua SCRIPT` in a process of its own (your cwd, environment, terminal); exec and repl share one session.
llmspell is also `lua` itself: when its first word (after the options above) is one of lua's options
(-e -l -i -v -E -W - --, also -eSTAT and -lMOD) or a script (not a command name, and an existing file,
a path with '/' or a name ending in .lua), or when there is no word and stdin is not a terminal, it
does what `llmspell run` with those words does. Command names come first: run a script called `exec`
as `llmspell ./exec`. A run's `arg` is lua's: its most negative entry is this binary's absolute path,
followed by lua's options as given (no `run`, no llmspell options), so a script that starts its
interpreter again (arg[-1] and the like, Penlight's app.lua()) starts llmspell.
State set with state.set() persists in $LLMSPELL_HOME/state.json (default ~/.llmspell).
With --remote, run sends the script, its args and your stdin (whole, unless a terminal) to the server,
where the kernel runs it in a process of its own with the kernel's cwd and environment; the exit code or
signal comes back (README \"Remote kernels\").

An uncaught Lua error in exec or repl is printed as `lua -e` prints it: `llmspell: MESSAGE` and lua's
stack traceback (Jupyter front ends get ename LuaError, docs/repl-and-exec.md \"Errors\").

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
  llmspell kernel start --RemoteProcessProxy.kernel-id ID --RemoteProcessProxy.response-address HOST:PORT
                        --RemoteProcessProxy.public-key KEY [--RemoteProcessProxy.port-range LOW..HIGH]
      How Jupyter Enterprise Gateway launches a kernel on a remote host (its kernelspecs' {kernel_id},
      {response_address}, {public_key}, {port_range}; the same flags without `RemoteProcessProxy.` too).
      Binds the ports inside the range (0..0: any) on 0.0.0.0 (or --ip), sends the encrypted connection
      info to the response address instead of writing a file, then takes {\"signum\": N} and
      {\"shutdown\": 1} on its comm port. spark-context-initialization-mode, cluster-type and
      kernel-class-name are accepted and ignored. See README \"Running on Enterprise Gateway\".
  llmspell kernel stop [ID | --all]     shut down (control channel, then SIGTERM, then SIGKILL);
                                        exit 1 if the kernel ID is not running
  llmspell kernel list                  live kernels: id, pid, uptime, busy/idle (and whose request), address,
                                        connection file
  llmspell kernel status [ID]           running and busy or idle: exit 0; not running or not answering: exit 1
  llmspell kernel interrupt [ID]        interrupt whatever the kernel runs (as Jupyter's interrupt button)
  llmspell kernel install [--user | --prefix DIR] [--name NAME]
      Write a Jupyter kernelspec for this binary (default: --user, name llmspell).

With --remote URL, start|stop|list|status|interrupt [NAME] act on the server's kernels through its REST
API (stop deletes the kernel; the server ends its process); install always writes the kernelspec here.

Logging: LLMSPELL_LOG=error|warn|info|debug|trace (default info).
";

pub const RUN_HELP: &str = "\
llmspell run [LUA-OPTIONS] [SCRIPT [ARGS...]] — run Lua as `lua [options] [script [args]]` does

The script runs in a fresh process forked by the kernel (started if needed), with your working
directory, environment, terminal and exit status; it shares only `state` with the session and other
runs. Options of llmspell (--kernel, --connect) go before lua's; everything after SCRIPT is its `arg`.

LUA-OPTIONS (as the stock lua's):
  -e STAT     execute the string STAT         -l MOD / -l G=MOD   require MOD into global MOD (G)
  -i          interactive loop after SCRIPT   -v                  show the Lua version
  -E          ignore LUA_INIT and LUA_PATH    -W                  turn warnings on
  --          stop handling options           -                   the script is stdin
With no SCRIPT and no -e/-v: lua's interactive loop on a terminal, else stdin is the script.
`run` may be left out when the first word is one of these options or a script (`llmspell -e X`,
`llmspell job.lua`; a script named like a command: `llmspell ./exec`). `arg` is lua's: arg[0] the
script as given, arg[-n] this binary's absolute path, then the options before the script (`-e`, `X`,
...; never `run` or llmspell's own options), so a script can start this interpreter again with any
of lua's command lines, with arg[-n] alone or with all the negative entries.

EXAMPLES:
  llmspell run report.lua --since 2026-01-01     arg[1] is \"--since\"
  echo 'print(io.read())' | llmspell run - < names.txt
  llmspell run -l cjson -e 'print(cjson.encode({1, 2}))'
  llmspell --kernel work run job.lua            through the kernel `work` (started if needed)
  llmspell -e 'print(arg[-2], arg[-1])' job.lua   as `lua -e ...`: prints this binary's path and -e
";

pub const EXEC_HELP: &str = "\
llmspell exec CODE — run CODE in the shared session (what `repl` and Jupyter clients see)

Prints the output, and the value of a trailing expression. CODE - reads the code from stdin. An
uncaught error prints as `lua -e` prints one: `llmspell: MESSAGE`, then lua's stack traceback. Exit
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
commands. Ctrl-D at an io.read() prompt is end of input (nil). If the kernel stops under the REPL,
it offers to start a new one. With stdin not a terminal it reads cells from it without prompts.

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
      and its child processes' output, arrive as output events; io.read sees end of input. With
      \"console\": \"integratedTerminal\" and a client that supports runInTerminal, the script gets
      that terminal instead (the client runs `llmspell dap --terminal SOCKET` there).
      Breakpoints (conditions, hit counts, logpoints) in the script and the modules it requires,
      stepping, variables, evaluate, break on uncaught errors (and on errors pcall or xpcall
      catch: the \"raised\" filter); the exit code in the exited event.
";
