"""bench.py section `debug`: the CPU suite as session cells with the Jupyter debugger attached,
without and with a breakpoint that is never hit, against no debugger (issue 14)."""

import json

from measure import log, med, r, ratio
from run_vs_lua import SUITE, SUITE_DIR


def bench_debug(cli, cfg):
    """The CPU suite in the session with the Jupyter debugger attached (issue 14): each item as a cell
    (`dofile`, timed by os.clock inside the cell), with no debugger, with one attached and no
    breakpoint, and with one breakpoint that is never hit (in a function of an earlier cell that is never
    called). Interleaved per round, so load drift touches the three alike."""
    from jupyter_client.blocking.client import BlockingKernelClient
    cli.run(["exec", "x = 1"])  # start the kernel
    kc = BlockingKernelClient(connection_file=str(cli.home / "kernels" / "default.json"))
    kc.load_connection_file()
    kc.start_channels()
    kc.wait_for_ready(timeout=30)
    seq = [0]

    def debug(command, arguments=None):
        seq[0] += 1
        msg = kc.session.msg("debug_request", {"seq": seq[0], "type": "request", "command": command,
                                               "arguments": arguments or {}})
        kc.control_channel.send(msg)
        while True:
            reply = kc.get_control_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                assert reply["content"].get("success"), reply["content"]
                return reply["content"].get("body", {})

    def cell_cpu(path):
        code = (f"local c = os.clock() dofile({json.dumps(path)}) "
                "io.stderr:write(('session %.6f\\n'):format(os.clock() - c))")
        msg_id = kc.execute(code)
        err = ""
        while True:
            m = kc.get_iopub_msg(timeout=600)
            if m["parent_header"].get("msg_id") != msg_id:
                continue
            if m["msg_type"] == "stream" and m["content"]["name"] == "stderr":
                err += m["content"]["text"]
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                break
        got = [float(w.split()[1]) for w in err.splitlines() if w.startswith("session ")]
        return got[-1] * 1000 if got else None

    items = {name: str(SUITE_DIR / f"{name}.lua") for name in SUITE}
    modes = ["off", "attached", "breakpoint"]
    cpus = {m: {name: [] for name in items} for m in modes}
    for path in items.values():  # untimed: page cache, warm session
        cell_cpu(path)
    try:
        for i in range(cfg["run_rounds"]):
            for name, path in items.items():
                cpus["off"][name].append(cell_cpu(path))
                debug("initialize", {"clientID": "bench", "adapterID": "llmspell"})
                debug("attach")
                debug("configurationDone")
                cpus["attached"][name].append(cell_cpu(path))
                # A breakpoint in a function that exists (its cell ran) but is never called: the call
                # and return hooks run on every call, the line hook never.
                never = "function never_called()\n  return 1\nend"
                never_path = debug("dumpCell", {"code": never})["sourcePath"]
                kc.execute(never)
                debug("setBreakpoints", {"source": {"path": never_path}, "breakpoints": [{"line": 2}]})
                cpus["breakpoint"][name].append(cell_cpu(path))
                debug("disconnect", {"restart": False, "terminateDebuggee": False})
            log(f"  debug round {i + 1}")
    finally:
        kc.stop_channels()
    res = {"rounds": cfg["run_rounds"], "suite": {}}
    for name in items:
        meds = {m: med([c for c in cpus[m][name] if c is not None]) for m in modes}
        res["suite"][name] = {m: r(meds[m], 1) for m in modes} | {
            "ratio_attached": r(ratio(meds["attached"], meds["off"]), 3),
            "ratio_breakpoint": r(ratio(meds["breakpoint"], meds["off"]), 3)}
    tot = {m: sum(res["suite"][n][m] or 0 for n in items) for m in modes}
    res["total"] = {m: r(tot[m], 1) for m in modes} | {
        "ratio_attached": r(ratio(tot["attached"], tot["off"]), 3),
        "ratio_breakpoint": r(ratio(tot["breakpoint"], tot["off"]), 3)}
    return res
