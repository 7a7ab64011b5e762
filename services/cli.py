"""The `ctloop` command: run one service, bring the whole stack up, or run the demo.

ctloop run {registry,ingest,trainer,monitor,serving,console}   one service in this process
ctloop up [--free-ports]                broker + the five services and the console, Ctrl-C stops
ctloop demo [--keep]                    up + a drifting stream, prints the loop (--keep: stay up)
ctloop train [--url URL]                ask the trainer for a run now (CTLOOP_OPERATOR_TOKEN)
ctloop models ...                       look at and change the registry
ctloop credentials [--out FILE]         a new set of role tokens and signing keys
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import TypeAdapter

from services.supervisor import SERVICES

if TYPE_CHECKING:
    from services.demo.driver import DemoReport


def _run(args: argparse.Namespace) -> int:
    from services.supervisor import die_with_supervisor

    die_with_supervisor()
    importlib.import_module(f"services.{args.service}.main").main()
    return 0


def _up(args: argparse.Namespace) -> int:
    from services.supervisor import Stack, StackError, parse_replicas, run_forever

    try:
        stack = Stack(free_ports=args.free_ports, replicas=parse_replicas(args.replicas))
        stack.start(timeout_s=args.timeout)
    except (StackError, ValueError) as exc:
        print(f"ctloop up failed: {exc}", file=sys.stderr)
        return 1
    for service in SERVICES:
        for name in stack.names[service]:
            print(f"  {name:<11} {stack.url(name)}")
    return run_forever(stack, "ctloop is up. Ctrl-C stops it.")


def _demo(args: argparse.Namespace) -> int:
    from services.demo.driver import DemoConfig, run_demo
    from services.supervisor import Stack, StackError, run_forever

    config = DemoConfig(seed=args.seed, timeout_s=args.timeout)
    log_path = Path(args.log)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("w")

    def keep(service: str, line: str) -> bool:
        # Everything goes to the log file; the terminal shows the supervisor and problems.
        log_file.write(f"{service:>8} | {line}")
        log_file.flush()
        return service == "ctloop" or " ERROR " in line or "Traceback" in line

    with tempfile.TemporaryDirectory(prefix="ctloop-demo-") as data:
        # live accuracy every 2 s (not 10): the demo's stream is short, the console draws it
        env = {"CTLOOP_DATA_DIR": data, "CTLOOP_MONITOR_QUALITY_REPORT_S": "2"}
        print(f"ctloop demo: starting the stack (full logs in {log_path})")
        try:
            stack = Stack(env=env, free_ports=True, log_filter=keep).start(timeout_s=180)
        except StackError as exc:
            print(f"ctloop demo failed to start: {exc}", file=sys.stderr)
            return 1
        print(f"ctloop demo: the console is at {stack.url('console')}", flush=True)
        try:
            report = run_demo(stack, config, say=lambda line: print(line, flush=True))
        except BaseException:
            stack.stop()
            raise
        _print_summary(report)
        if args.json:
            Path(args.json).write_text(report.model_dump_json(indent=2))
        if args.keep:
            run_forever(
                stack,
                f"\nthe stack stays up for a look: the console is at {stack.url('console')}; Ctrl-C stops it",
            )
        else:
            stack.stop()
    return 0 if report.closed else 1


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _print_summary(r: DemoReport) -> None:
    print("\n=== ctloop demo summary ===")
    if r.trace:
        print("the loop, traced by its correlation id:")
        for line in r.trace:
            print(f"  {line}")
    print(f"accuracy before the drift       {_pct(r.accuracy_before)}")
    print(f"accuracy just after the drift   {_pct(r.accuracy_just_after)}")
    print(f"accuracy after the swap         {_pct(r.accuracy_after_swap)}")
    if r.closed:
        print(
            f"drift to swap                   {r.drift_to_swap_records} records, "
            f"{r.drift_to_swap_seconds} s (v{r.first_version} -> v{r.new_version})"
        )
        print(f"drift onset estimated at record {r.onset_estimate_record} (true: {r.drift_record})")
    print(f"failed prediction requests      {r.failed_requests}")
    print("the loop closed" if r.closed else f"the loop did NOT close: {r.reason}")


def _train(args: argparse.Namespace) -> int:
    import httpx

    from shared.settings import TrainerSettings

    settings = TrainerSettings()
    url = args.url or f"http://127.0.0.1:{settings.trainer_port}"
    try:
        auth = {"Authorization": f"Bearer {settings.token('operator')}"}
        response = httpx.post(f"{url}/v1/runs", headers=auth, timeout=10)
    except httpx.HTTPError as exc:
        print(f"trainer at {url} not reachable: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(response.json(), indent=2))
    return 0 if response.status_code < 400 else 1


def _probe(args: argparse.Namespace) -> int:
    import os

    import httpx

    from services.supervisor import DEFAULT_PORTS

    port = int(os.environ.get(f"CTLOOP_{args.service.upper()}_PORT", DEFAULT_PORTS[args.service]))
    path = "/healthz" if args.ready else "/livez"
    try:
        response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=3)
    except httpx.HTTPError as exc:
        print(f"{args.service} on port {port}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"{args.service} on port {port}: {response.status_code} {response.text[:200]}", file=sys.stderr)
    return 0 if response.status_code == 200 else 1


def _credentials(args: argparse.Namespace) -> int:
    from shared import credentials

    made = credentials.generate()
    if args.out:
        try:
            credentials.write(Path(args.out), made)
        except FileExistsError:
            print(f"{args.out} exists; not overwriting credentials", file=sys.stderr)
            return 1
        print(f"wrote {args.out} (readable only by you); each service needs only some (docs/security.md)")
    else:
        print("\n".join(f"{name}={value}" for name, value in made.items()))
    return 0


def _config_reference(_: argparse.Namespace) -> int:
    from services.config_reference import render

    print(render(), end="")
    return 0


def _models(args: argparse.Namespace) -> int:
    from shared.registry_client import RegistryClient, RegistryError
    from shared.settings import CommonSettings

    settings = CommonSettings()
    client = RegistryClient(args.url or settings.registry_url, settings.token("operator"))
    name: str = getattr(args, "name", "")
    version: int = getattr(args, "version", None) or 0  # required where an action takes one
    calls: dict[str, Callable[[], object]] = {
        "list": client.models,
        "show": lambda: client.version(name, version) if version else client.versions(name),
        "history": lambda: client.history(name, args.environment),
        "environments": client.environments,
        "lineage": lambda: client.lineage(name, version),
        "promote": lambda: client.promote(
            name, version, args.alias, args.reason, args.replaces, args.override_rollback, args.to
        ),
        "approve": lambda: client.approve(
            name, version, args.replaces, args.override_rollback, args.environment, args.reason
        ),
        "rollback": lambda: client.rollback(name, args.reason, args.replaces, args.environment),
    }
    try:
        result = calls[args.action]()
    except RegistryError as exc:
        print(f"registry: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if result is None:
        print(f"registry: {name} v{version} not found", file=sys.stderr)
        return 1
    print(_JSON.dump_json(result, indent=2).decode())
    return 0


_JSON: TypeAdapter[object] = TypeAdapter(object)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ctloop", description="Continuous training for tabular ML.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one service in this process")
    run.add_argument("service", choices=SERVICES)
    run.set_defaults(func=_run)

    up = sub.add_parser("up", help="start the broker (unless CTLOOP_KAFKA_BOOTSTRAP is set) and all services")
    up.add_argument("--free-ports", action="store_true", help="pick free ports instead of 8000-8005 and 8081")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    up.add_argument(
        "--replicas",
        default="",
        metavar="SERVICE=N,…",
        help="processes per service, e.g. monitor=3,trainer=2,registry=2,serving=2,ingest=2: each on a "
        "port of its own (a free one beyond the first); registry replicas need CTLOOP_REGISTRY_DB_URL "
        "(PostgreSQL) and share artifacts in it",
    )
    up.set_defaults(func=_up)

    demo = sub.add_parser("demo", help="run the whole loop on a stream with a known drift")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds before giving up")
    demo.add_argument("--log", default="var/demo.log", help="where the services' full logs go")
    demo.add_argument("--json", help="also write the summary as JSON to this file")
    demo.add_argument(
        "--keep", action="store_true", help="leave the stack up after the demo (Ctrl-C stops it)"
    )
    demo.set_defaults(func=_demo)

    train = sub.add_parser("train", help="ask the trainer for a training run now")
    train.add_argument("--url", help="trainer URL (default: 127.0.0.1 and CTLOOP_TRAINER_PORT)")
    train.set_defaults(func=_train)

    probe = sub.add_parser("probe", help="health check of a service on this host (for containers)")
    probe.add_argument("service", choices=SERVICES)
    probe.add_argument("--ready", action="store_true", help="check readiness (/healthz), not liveness")
    probe.set_defaults(func=_probe)

    creds = sub.add_parser(
        "credentials", help="make a new set of role tokens and the registry's signing key pair"
    )
    creds.add_argument("--out", help="write them to this new file (mode 0600) instead of printing them")
    creds.set_defaults(func=_credentials)

    reference = sub.add_parser("config-reference", help="print every setting as Markdown")
    reference.set_defaults(func=_config_reference)

    models = sub.add_parser(
        "models", help="look at and change the registry (writes need CTLOOP_OPERATOR_TOKEN)"
    )
    models.add_argument("--url", help="registry URL (default: CTLOOP_REGISTRY_URL)")
    actions = models.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every model with its latest version and aliases")
    show = actions.add_parser("show", help="a model's versions, or one version")
    show.add_argument("name")
    show.add_argument("version", nargs="?", type=int)
    lineage_cmd = actions.add_parser("lineage", help="dataset, run, trigger and promotions of a version")
    lineage_cmd.add_argument("name")
    lineage_cmd.add_argument("version", type=int)
    replaces_help = "only if the alias points at this version now (else the registry refuses: 409)"
    override_help = "make champion a version that was once rolled back from champion"
    approve_cmd = actions.add_parser(
        "approve", help="approve a version for an environment (default production: it becomes champion)"
    )
    approve_cmd.add_argument("name")
    approve_cmd.add_argument("version", type=int)
    approve_cmd.add_argument("--environment", default="production")
    approve_cmd.add_argument("--reason", default="approved (cli)", help="recorded in the history")
    promote_cmd = actions.add_parser("promote", help="point an alias at a version")
    promote_cmd.add_argument("name")
    promote_cmd.add_argument("version", type=int)
    promote_cmd.add_argument("--alias", default="champion")
    promote_cmd.add_argument("--to", metavar="ENVIRONMENT", help="promote into this environment (its alias)")
    promote_cmd.add_argument("--reason", default="manual (cli)")
    for command in (approve_cmd, promote_cmd):
        command.add_argument("--replaces", type=int, help=replaces_help)
        command.add_argument("--override-rollback", action="store_true", help=override_help)
    rollback_cmd = actions.add_parser("rollback", help="the previous champion becomes champion again")
    rollback_cmd.add_argument("name")
    rollback_cmd.add_argument("--reason", default="manual rollback (cli)")
    rollback_cmd.add_argument("--replaces", type=int, help="only if the champion is this version now")
    rollback_cmd.add_argument("--environment", default="production")
    history_cmd = actions.add_parser("history", help="every alias change of a model (who, when, why)")
    history_cmd.add_argument("name")
    history_cmd.add_argument("--environment", help="only this environment's")
    actions.add_parser("environments", help="the environments in promotion order, with their rules")
    models.set_defaults(func=_models)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
