"""``responses-bridge doctor``: can the code interpreter run code on this machine, and if not, why and how to fix it.

Runs the sandbox's checks (sandbox/doctor.py) with the limits the settings give (``RESPONSES_BRIDGE_CODE_*``)
and prints one line per check, then one line for each tool: the code interpreter (and in which mode) and the hosted
shell. The exit status gates what a deployment configured: 1 when code cannot run; with ``--require-shell`` (a
deployment that offers the hosted shell) also 1 when shell commands cannot run; else 0 — a host that runs code in
the single-process mode passes, and says what it cannot do.
"""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "doctor", help="check whether the code interpreter can run code here (bubblewrap, user namespaces, the "
        "interpreter inside the sandbox, which containment mode is in force and what it costs) and say how to fix "
        "what cannot")
    parser.add_argument("--require-shell", action="store_true",
                        help="exit 1 also when the hosted shell cannot run here (it needs a cgroup per call)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config.settings import load_settings
    from ..sandbox.doctor import diagnose
    from ..sandbox.identity import SandboxIdentity

    settings = load_settings()  # a bad setting: the one line cli.main prints, exit status 2
    if settings.code_sandbox_backend == "agent-sandbox":  # calls run in pods: the cluster is what is checked
        from ..sandbox.agent_sandbox.checks import doctor
        return doctor(settings)
    identity = SandboxIdentity.for_process(settings.code_sandbox_uid, settings.code_sandbox_gid)
    findings = diagnose(settings.sandbox_limits(), use_cgroup=settings.code_cgroup,
                        require_cgroup=settings.code_require_cgroup, identity=identity)
    width = max(len(finding.name) for finding in findings)
    for finding in findings:
        print(f"{'ok  ' if finding.ok else 'FAIL'}  {finding.name:<{width}}  {finding.detail}")
    runs = all(finding.ok for finding in findings
               if finding.name in ("bubblewrap", "namespaces", "containment", "python")) and \
        any(finding.name == "python" for finding in findings)
    containment = next((finding.detail for finding in findings if finding.name == "containment"), "")
    mode = "single-process: no subprocess" if containment.startswith("single-process") else "a cgroup per call"
    print("code interpreter: " + (f"code runs in the sandbox here ({mode})" if runs else
                                  "code cannot run here; the code_interpreter tool is refused"))
    shell = next((finding for finding in findings if finding.name == "hosted shell"), None)
    shell_runs = shell is not None and shell.ok and "refused" not in shell.detail
    print("hosted shell: " + ("shell commands run in the sandbox here" if shell_runs else
                              "cannot run here (it needs a cgroup per call, a process per command); the shell tool "
                              "with a container environment is refused"
                              + ("" if args.require_shell else " (exit status 1 with --require-shell)")))
    desktop = next((finding for finding in findings if finding.name == "desktop"), None)
    print("desktop (computer use): " + ("a desktop runs in the sandbox here" if desktop is not None and desktop.ok
                                        else "cannot run here: the computer_use tool is refused"))
    return 0 if runs and (shell_runs or not args.require_shell) else 1
