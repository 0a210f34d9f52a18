"""``responses-bridge doctor``: can the code interpreter run code on this machine, and if not, why and how to fix it.

Runs the sandbox's checks (sandbox/doctor.py) with the limits the settings give (``RESPONSES_BRIDGE_CODE_*``)
and prints one line per check; the exit status is 1 when code cannot run, or when the hosted shell cannot for want
of what the host gives (not when ``RESPONSES_BRIDGE_CODE_CGROUP=false`` chose the single-process mode).
"""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "doctor", help="check whether the code interpreter can run code here (bubblewrap, user namespaces, the "
        "interpreter inside the sandbox, which containment mode is in force and what it costs) and say how to fix "
        "what cannot")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .config import load_settings
    from .sandbox.doctor import diagnose
    from .sandbox.identity import SandboxIdentity

    settings = load_settings()  # a bad setting: the one line cli.main prints, exit status 2
    if settings.code_sandbox_backend == "agent-sandbox":  # calls run in pods: the cluster is what is checked
        from .sandbox.agent_sandbox.checks import doctor
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
    print("code interpreter: " + ("code runs in the sandbox here" if runs else
                                  "code cannot run here; the code_interpreter tool is refused"))
    shell = next((finding for finding in findings if finding.name == "hosted shell"), None)
    print("hosted shell: " + ("shell commands run in the sandbox here" if shell is not None and shell.ok
                              and "refused" not in shell.detail else
                              "shell commands cannot run here (they need the cgroup mode, a process each); the "
                              "shell tool with a container environment is refused"))
    return 0 if runs and (shell is None or shell.ok) else 1
