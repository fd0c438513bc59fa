"""GPU instances on EC2: launch once, carry a deadline, terminate, reap what leaked.

Plain boto3 clients (the hook builds them from the Airflow connection); no Airflow here.

- **Launch is idempotent.** A task's instance is found by its run key tag before anything is
  created ("adopt before create"), and every ``RunInstances`` call carries a ``ClientToken``
  made from the run key, a generation and the candidate's index, so a retry after a lost
  response gets the same instance back rather than a second one.
- **Capacity is not a failure.** Capacity-type errors move on to the next candidate (type,
  zone, market), within ``max_launch_attempts``; when none is left the error lists every
  attempt.
- **Every try sends the same request.** Nothing in a ``RunInstances`` call depends on when the
  try runs: the deadline is relative to the instance's own launch (``max_lifetime`` seconds
  after it), in the boot script (``shutdown -h +<minutes>``) and in the ``mlci:max_lifetime``
  tag. So a retry's call with the same ``ClientToken`` is the same call, and EC2 answers it
  with the first try's instance, even before ``DescribeInstances`` shows that instance.
- **Every instance dies.** The boot script schedules a shutdown at ``max_lifetime`` before it
  does anything else, and the instance terminates on shutdown, so it dies even if Airflow is
  gone. After the launch the instance is tagged ``mlci:expires_at`` (its ``LaunchTime`` plus
  ``max_lifetime``, for people and the reaper); the reaper terminates what carries our owner
  tag and has expired (by that tag, or by ``LaunchTime`` + ``mlci:max_lifetime`` where the tag
  never got written) or outlived its run.
- **No secrets travel.** The user data names the agent's arguments and the startup script
  only; anything shaped like a credential (AWS keys, GitHub, GitLab, Slack, Google, Hugging
  Face, OpenAI or Stripe tokens, JSON Web Tokens, private keys, passwords in URLs, literal
  values of secret-named variables) is refused with :class:`SecretInUserDataError`, which
  names the kind and never the value.
- **The instance metadata service stays on the instance.** IMDSv2 only, with a hop limit of 1.

Every instance and its volumes carry the tags ``mlci:owner``, ``mlci:dag_id``, ``mlci:run_id``,
``mlci:task_id``, ``mlci:map_index``, ``mlci:run_key``, ``mlci:group``, ``mlci:max_lifetime``
and ``Name``, plus the spec's own tags (see :func:`instance_tags`); the instance also gets
``mlci:expires_at`` once it is launched.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec, LaunchCandidate, Market
from airflow_provider_mlci.exceptions import (
    GpuCapacityError,
    GpuProvisioningError,
    MlciConfigError,
    SecretInUserDataError,
)

__all__ = [
    "ALIVE_STATES",
    "CAPACITY_ERRORS",
    "DLAMI_NAME_PATTERN",
    "DLAMI_SSM_PARAMETER",
    "IMDS_HOP_LIMIT",
    "NOT_TERMINATED_STATES",
    "OWNER",
    "LaunchResult",
    "ReapReport",
    "agent_args_from_user_data",
    "boot_script",
    "client_token",
    "expires_at_for",
    "find_ami",
    "find_instances",
    "find_secret",
    "instance_deadline",
    "instance_tags",
    "launch",
    "mask_secrets",
    "reap",
    "run_key",
    "terminate",
]

#: The value of the ``mlci:owner`` tag on everything this provider launches.
OWNER = "airflow-provider-mlci"
#: States of an instance that runs (or is about to).
ALIVE_STATES = ("pending", "running")
#: States of an instance that still exists (and may still bill, for its volumes at least).
NOT_TERMINATED_STATES = ("pending", "running", "stopping", "stopped")
_GONE_STATES = ("shutting-down", "terminated")

#: Error codes that mean "no room for this candidate": try the next one.
CAPACITY_ERRORS = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "MaxSpotInstanceCountExceeded",
        "SpotMaxPriceTooLow",
        "InsufficientCapacity",
        "Unsupported",
    }
)
#: Public SSM parameter naming the current AWS Deep Learning Base AMI (NVIDIA driver, Ubuntu 24.04).
DLAMI_SSM_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"
#: The same AMI family by name, for accounts or partitions without the parameter.
DLAMI_NAME_PATTERN = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04)*"

_AGENT_ARGS_MARKER = "# mlci-agent-args:"
_AGENT_WHEEL_MARKER = "# mlci-agent-wheel:"
#: The boot script's download of the agent's wheel (boto3 is installed by then; the instance
#: profile gives the credentials): ``<s3 url> <file> <region> [<endpoint url>]``.
_FETCH_WHEEL = (
    'import sys, boto3; u, f, r = sys.argv[1:4]; b, _, k = u[5:].partition("/"); '
    'boto3.client("s3", region_name=r, endpoint_url=(sys.argv[4] if len(sys.argv) > 4 else None))'
    ".download_file(b, k, f)"
)
_STARTUP_DELIMITER = "MLCI_STARTUP_SCRIPT_END"
_USER_DATA_LIMIT = 16 * 1024  # bytes, after base64 (EC2's limit)
#: The instance metadata service's hop limit: 1 answers the instance's own processes only.
#: Nothing of ours needs more: the agent and its stage commands run on the host, not in containers.
IMDS_HOP_LIMIT = 1


@dataclass(frozen=True)
class _SecretShape:
    """One shape of credential: its kind (for messages), its pattern, and what of a match to mask
    (``None``: a name only, nothing to mask; ``0``: the whole match; ``n``: group ``n``)."""

    kind: str
    pattern: re.Pattern[str]
    mask: int | None = 0


#: A literal secret value: long enough to be one, and not a variable, a command or a path.
_LITERAL = r"""['"]?([A-Za-z0-9_+=-][A-Za-z0-9_+/=.-]{15,})"""
_PRIVATE_KEY = r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
_B64URL = r"[A-Za-z0-9_-]"
_SECRET_SHAPES = tuple(
    _SecretShape(kind, re.compile(pattern), mask)
    for kind, pattern, mask in (
        (
            "an AWS secret key or session token setting",
            r"(?i)(aws_?secret_?access_?key|secret_?access_?key|aws_?session_?token)",
            None,
        ),
        ("an AWS access key id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", 0),
        ("a private key", _PRIVATE_KEY, 0),
        ("a PuTTY private key", r"PuTTY-User-Key-File-\d", 0),
        ("a GitHub token", r"\b(?:gh[opusr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,255})\b", 0),
        ("a GitLab token", r"\bgl(?:pat|dt|ptt|rt|cbt|oas|ft)-[A-Za-z0-9_-]{20,}", 0),
        ("a Slack token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}", 0),
        ("a Slack webhook URL", r"hooks\.slack\.com/services/(T\w+/B\w+/\w+)", 1),
        ("a Google API key", r"\bAIza[0-9A-Za-z_-]{35}", 0),
        ("a JSON Web Token", rf"\beyJ{_B64URL}{{10,}}\.{_B64URL}{{10,}}\.{_B64URL}{{10,}}", 0),
        ("a Hugging Face token", r"\bhf_[A-Za-z0-9]{30,}", 0),
        ("an OpenAI or Anthropic API key", r"\bsk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{32,}", 0),
        ("a Stripe secret key", r"\b[rs]k_live_[A-Za-z0-9]{20,}", 0),
        ("a Weights & Biases API key", r"(?i)\bwandb\s+login\s+(?:--?[a-z-]+\s+)*([0-9a-f]{40})\b", 1),
        # The generic shapes last, so that a known token is named as what it is.
        ("a password in a URL", r"://[^/\s:@]+:([^/\s@]+)@", 1),
        (
            "a literal value of a secret-named variable",
            r"(?i)(?<![\w-])[A-Z0-9_]*(?:SECRET|TOKEN|PASSWORD|PASSWD|API_?KEY|PRIVATE_?KEY)\s*=\s*" + _LITERAL,
            1,
        ),
        (
            "a secret on a command line",
            r"(?i)(?<![\w-])--(?:token|password|passwd|secret|api-key|apikey)(?:=|\s+)" + _LITERAL,
            1,
        ),
    )
)
_PRIVATE_KEY_BLOCK = re.compile(_PRIVATE_KEY + r".*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)", re.DOTALL)


# ---------------------------------------------------------------------------------- identity


def run_key(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """The key of one task's instance: the same for every try of the task, 32 hex characters.

    :param dag_id: the DAG
    :param run_id: the DAG run
    :param task_id: the task (the setup task that launches the instance)
    :param map_index: the map index (``-1``: not mapped)
    """
    text = "\x1f".join((dag_id, run_id, task_id, str(int(map_index))))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def client_token(run_key: str, generation: int, candidate: int) -> str:
    """The ``ClientToken`` of one ``RunInstances`` call (deterministic, at most 64 ASCII characters).

    :param run_key: the task's run key (:func:`run_key`)
    :param generation: 0, then one more each time a launch must start over (the instance of
        the earlier generation was terminated, e.g. the run was cleared after its teardown)
    :param candidate: the candidate's index in :meth:`GpuInstanceSpec.candidates`
    """
    token = f"mlci-{run_key}-g{int(generation)}-c{int(candidate)}"
    if len(token) > 64 or not token.isascii():
        raise MlciConfigError(f"The client token {token!r} is longer than EC2's 64 characters.")
    return token


def expires_at_for(spec: GpuInstanceSpec, now: datetime) -> datetime:
    """When an instance launched at ``now`` must be gone (``now`` + ``max_lifetime``, UTC, whole seconds).

    :param spec: the instance
    :param now: its launch time (timezone-aware): EC2's ``LaunchTime`` of the instance
    """
    return (now.astimezone(UTC) + timedelta(seconds=spec.max_lifetime)).replace(microsecond=0)


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def instance_deadline(instance: Mapping[str, Any]) -> datetime | None:
    """When an instance must be gone: the earlier of its ``mlci:expires_at`` tag and its
    ``LaunchTime`` + ``mlci:max_lifetime`` seconds (``None``: it carries neither).

    The second needs nothing written after the launch, so it holds for an instance whose
    launching try died before it could tag the deadline.

    :param instance: the instance as ``DescribeInstances`` or ``RunInstances`` return it
    """
    tags = _tags_of(instance)
    found = []
    tagged = _parse_time(tags.get("mlci:expires_at"))
    if tagged is not None:
        found.append(tagged)
    launched = instance.get("LaunchTime")
    if isinstance(launched, str):
        launched = _parse_time(launched)
    lifetime = tags.get("mlci:max_lifetime", "")
    if isinstance(launched, datetime) and lifetime.isdigit():
        if launched.tzinfo is None:
            launched = launched.replace(tzinfo=UTC)
        found.append((launched.astimezone(UTC) + timedelta(seconds=int(lifetime))).replace(microsecond=0))
    return min(found) if found else None


def instance_tags(
    spec: GpuInstanceSpec,
    *,
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int,
    run_key: str,
    group: str,
) -> dict[str, str]:
    """Every tag an instance (and its volumes) gets at launch: ours, then the spec's.

    Nothing here depends on when the launch happens (the deadline is ``mlci:max_lifetime``
    seconds after the instance's ``LaunchTime``), so every try of a task tags alike.

    :param spec: the instance
    :param dag_id: the DAG that launches it
    :param run_id: the DAG run
    :param task_id: the launching task
    :param map_index: the launching task's map index
    :param run_key: the launching task's run key
    :param group: the setup task the instance belongs to (teardown finds it by this)
    """
    ours = {
        "mlci:owner": OWNER,
        "mlci:dag_id": dag_id,
        "mlci:run_id": run_id,
        "mlci:task_id": task_id,
        "mlci:map_index": str(map_index),
        "mlci:run_key": run_key,
        "mlci:group": group,
        "mlci:max_lifetime": str(spec.max_lifetime),
        "Name": f"mlci-{dag_id}-{task_id}",
    }
    tags = {**ours, **dict(spec.tags)}  # the spec may name the instance; it cannot touch mlci: keys
    return {key: value[:256] for key, value in tags.items()}


# ---------------------------------------------------------------------------------- user data


def find_secret(text: str) -> str | None:
    """The kind of the first credential-shaped string in ``text`` (``"a GitHub token"``...), or ``None``.

    The kinds: AWS access key ids and secret key or session token settings, passwords in URLs,
    private keys (PEM, OpenSSH, PGP, PuTTY), GitHub, GitLab, Slack, Google, Hugging Face,
    OpenAI/Anthropic, Stripe and Weights & Biases keys, JSON Web Tokens, Slack webhook URLs,
    literal values given to secret-named variables (``HF_TOKEN=...``; not ``$(...)`` or
    ``${...}``) and to ``--token``/``--password``-style options.

    :param text: any text
    """
    for shape in _SECRET_SHAPES:
        if shape.pattern.search(text):
            return shape.kind
    return None


def mask_secrets(text: str) -> str:
    """``text`` with every credential-shaped value :func:`find_secret` knows replaced by ``***``.

    A private key is masked from its ``BEGIN`` line to its ``END`` line (or to the end of the
    text); setting names (``AWS_SECRET_ACCESS_KEY``) are kept, only values go.

    :param text: any text (a log line, an error message)
    """
    text = _PRIVATE_KEY_BLOCK.sub("***", text)
    for shape in _SECRET_SHAPES:
        if shape.mask is None:
            continue
        text = shape.pattern.sub(lambda match, group=shape.mask: _masked(match, group), text)
    return text


def _masked(match: re.Match[str], group: int) -> str:
    """The match with its group ``group`` (``0``: all of it) replaced by ``***``."""
    if group == 0:
        return "***"
    start, end = (index - match.start() for index in match.span(group))
    whole = match.group(0)
    return f"{whole[:start]}***{whole[end:]}"


def _refuse_secrets(where: str, text: str) -> None:
    kind = find_secret(text)
    if kind is not None:
        raise SecretInUserDataError(
            f"The {where} holds what looks like {kind}. EC2 user data is readable by anyone who may describe "
            "the instance, so no credential may travel in it: the instance reaches S3 through its instance "
            "profile, and nothing else a job needs is a secret sent to the instance."
        )


def boot_script(
    spec: GpuInstanceSpec,
    *,
    agent_args: Sequence[str],
    expires_at: datetime | None = None,
    agent_wheel: str | None = None,
    agent_requirements: Sequence[str] = (),
) -> str:
    """The instance's user data: a bash script that schedules the deadline, then runs the agent.

    In order: ``shutdown -h +<minutes of max_lifetime>`` (the instance is launched with
    ``InstanceInitiatedShutdownBehavior=terminate``, so that terminates it whether Airflow is
    there or not); the spec's startup script; the agent, pip-installed into a virtualenv and run
    as ``python -m airflow_provider_mlci.agent <agent_args>``; then ``shutdown -h now`` when the
    agent exits (idle timeout) or could not be installed. With no ``agent_args`` no agent is
    started and the instance lives until it is terminated or its deadline.

    The script holds exactly one line ``# mlci-agent-args: <JSON list>`` (see
    :func:`agent_args_from_user_data`). It holds no time: the same spec and arguments give the
    same script on every try, so a retry's ``RunInstances`` is the same call as the first try's.

    :param spec: the instance
    :param agent_args: the agent's command-line arguments (no credentials)
    :param expires_at: ignored (the deadline counts from the instance's boot, and the
        ``mlci:expires_at`` tag gives its time); kept so that older callers still work
    :param agent_wheel: with ``spec.agent_requirement=None``: the ``s3://`` URL of the worker's
        wheel (:mod:`~airflow_provider_mlci.core.compute.agent_dist`), installed with ``--no-deps``
        after ``agent_requirements``
    :param agent_requirements: the agent's own requirements (installed before its wheel)
    :raises SecretInUserDataError: an argument, the agent requirement or the startup script
        holds what looks like a credential (the message names its kind, never its value)
    :raises MlciConfigError: the script is over EC2's 16 KB
    """
    del expires_at
    args = [str(arg) for arg in agent_args]
    _refuse_secrets("agent arguments", "\n".join(args))
    if spec.agent_requirement is not None:
        _refuse_secrets("agent requirement", spec.agent_requirement)
        install = [spec.agent_requirement]
    elif args:
        if not agent_wheel or not agent_wheel.startswith("s3://"):
            raise MlciConfigError(
                "No agent to install: give the worker's wheel (an s3:// URL), or set GpuInstanceSpec.agent_requirement."
            )
        _refuse_secrets("agent wheel URL", agent_wheel)
        _refuse_secrets("agent requirements", "\n".join(agent_requirements))
        install = list(agent_requirements)
    if spec.startup_script:
        _refuse_secrets("startup script", spec.startup_script)
        if _STARTUP_DELIMITER in spec.startup_script:
            raise MlciConfigError(f"The startup script may not contain the line {_STARTUP_DELIMITER!r}.")
    minutes = max(1, math.ceil(spec.max_lifetime / 60))
    lines = [
        "#!/bin/bash",
        "# Boot script of a GPU instance launched by airflow-provider-mlci. It holds no credentials:",
        "# the instance reaches S3 through its instance profile.",
        f"# Deadline: {spec.max_lifetime} s after launch (the instance's mlci:expires_at tag gives the time).",
        f"{_AGENT_ARGS_MARKER} {json.dumps(args)}",
        *(
            [f"{_AGENT_WHEEL_MARKER} {json.dumps({'url': agent_wheel, 'requirements': list(agent_requirements)})}"]
            if spec.agent_requirement is None and args
            else []
        ),
        "",
        "# 1. The deadline first, whatever happens next: shutting down terminates this instance.",
        f"shutdown -h +{minutes} 'airflow-provider-mlci: max_lifetime reached'",
        "",
        "exec >>/var/log/mlci-boot.log 2>&1",
        "mkdir -p /opt/mlci",
    ]
    if spec.startup_script:
        lines += [
            "",
            "# 2. The spec's startup script.",
            f"cat > /opt/mlci/startup.sh <<'{_STARTUP_DELIMITER}'",
            spec.startup_script.rstrip("\n"),
            _STARTUP_DELIMITER,
            'bash /opt/mlci/startup.sh || echo "mlci: the startup script exited with $?"',
        ]
    if args:
        command = " ".join(
            shlex.quote(arg) for arg in ["/opt/mlci/venv/bin/python", "-m", "airflow_provider_mlci.agent", *args]
        )
        lines += [
            "",
            "# 3. The agent: it takes jobs from its mailbox and exits after idle_timeout without one.",
            "# --system-site-packages: stage commands run with this interpreter and see the AMI's frameworks.",
            "# bubblewrap: the agent runs every stage command in a sandbox without network, so none can",
            "# reach the instance profile's credentials through the metadata service.",
            "command -v bwrap >/dev/null || apt-get install -y -q bubblewrap >/dev/null 2>&1 \\",
            "  || dnf install -y -q bubblewrap >/dev/null 2>&1 || echo 'mlci: could not install bubblewrap'",
            "if python3 -m venv --system-site-packages /opt/mlci/venv \\",
            f"    && /opt/mlci/venv/bin/pip install --quiet {' '.join(shlex.quote(r) for r in install)} \\",
            *(_wheel_install_lines(agent_wheel, args) if spec.agent_requirement is None else []),
            "    ; then",
            f"  {command}",
            '  echo "mlci: the agent exited with $?"',
            "else",
            '  echo "mlci: could not install the agent"',
            "fi",
            "shutdown -h now 'airflow-provider-mlci: agent finished'",
        ]
    script = "\n".join(lines) + "\n"
    size = len(base64.b64encode(script.encode()))
    if size > _USER_DATA_LIMIT:
        raise MlciConfigError(
            f"The boot script is {size} bytes in base64, over EC2's {_USER_DATA_LIMIT}: shorten the startup script."
        )
    return script


def _wheel_install_lines(agent_wheel: str | None, args: Sequence[str]) -> list[str]:
    """The boot script's lines that fetch the worker's wheel and install it without its requirements."""
    assert agent_wheel is not None
    where = [_option(args, "--region") or "us-east-1", *([url] if (url := _option(args, "--endpoint-url")) else [])]
    local = f"/opt/mlci/{agent_wheel.rsplit('/', 1)[-1]}"
    fetch = ["/opt/mlci/venv/bin/python", "-c", _FETCH_WHEEL, agent_wheel, local, *where]
    return [
        f"    && {' '.join(shlex.quote(part) for part in fetch)} \\",
        f"    && /opt/mlci/venv/bin/pip install --quiet --no-deps {shlex.quote(local)} \\",
    ]


def _option(args: Sequence[str], name: str) -> str | None:
    """The value after ``name`` in ``args`` (``None`` if absent)."""
    for index, arg in enumerate(args[:-1]):
        if arg == name:
            return args[index + 1]
    return None


def agent_wheel_from_user_data(user_data: str) -> dict[str, Any] | None:
    """The worker's wheel a boot script installs the agent from (``{"url", "requirements"}``), if any.

    :param user_data: the decoded user data
    """
    for line in user_data.splitlines():
        if line.startswith(_AGENT_WHEEL_MARKER):
            return json.loads(line[len(_AGENT_WHEEL_MARKER) :])
    return None


def agent_args_from_user_data(user_data: str) -> list[str]:
    """The agent arguments a boot script names (``[]`` if it names none).

    :param user_data: the decoded user data
    """
    for line in user_data.splitlines():
        if line.startswith(_AGENT_ARGS_MARKER):
            value = json.loads(line[len(_AGENT_ARGS_MARKER) :])
            return [str(arg) for arg in value]
    return []


# ---------------------------------------------------------------------------------- launch


@dataclass(kw_only=True)
class LaunchResult:
    """The instance a launch started or adopted, and how it got there.

    ``attempts`` lists every ``RunInstances`` call that failed before, each as
    ``{"instance_type", "availability_zone", "market", "error"}``; ``expires_at`` is the
    instance's deadline (:func:`instance_deadline`) as ISO 8601 UTC, ``None`` if unknown.
    """

    instance_id: str
    instance_type: str
    availability_zone: str | None
    market: str
    adopted: bool
    attempts: list[dict[str, Any]] = field(default_factory=list)
    state: str = "pending"
    tags: dict[str, str] = field(default_factory=dict)
    generation: int = 0
    expires_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The result as plain JSON."""
        return asdict(self)


def _tags_of(instance: Mapping[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in instance.get("Tags") or []}


def _result(
    instance: Mapping[str, Any], *, adopted: bool, attempts: list[dict[str, Any]], generation: int
) -> LaunchResult:
    return LaunchResult(
        instance_id=instance["InstanceId"],
        instance_type=instance.get("InstanceType", ""),
        availability_zone=(instance.get("Placement") or {}).get("AvailabilityZone"),
        market=Market.SPOT.value if instance.get("InstanceLifecycle") == "spot" else Market.ON_DEMAND.value,
        adopted=adopted,
        attempts=attempts,
        state=(instance.get("State") or {}).get("Name", "pending"),
        tags=_tags_of(instance),
        generation=generation,
    )


def find_instances(
    client: Any, *, tags: Mapping[str, str], states: Iterable[str] = ALIVE_STATES, instance_ids: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The instances carrying all of ``tags`` in one of ``states`` (oldest launch first).

    :param client: a boto3 EC2 client
    :param tags: tag key -> value, all of which must match
    :param states: instance states to include
    :param instance_ids: only these instances (as a filter: unknown ids are no error)
    """
    filters = [{"Name": f"tag:{key}", "Values": [value]} for key, value in tags.items()]
    filters.append({"Name": "instance-state-name", "Values": list(states)})
    if instance_ids:
        filters.append({"Name": "instance-id", "Values": list(instance_ids)})
    found: list[dict[str, Any]] = []
    for page in client.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page.get("Reservations", []):
            found.extend(reservation.get("Instances", []))
    return sorted(found, key=lambda i: (str(i.get("LaunchTime", "")), i["InstanceId"]))


def _run_instances_args(
    spec: GpuInstanceSpec, candidate: LaunchCandidate, *, ami: str, tags: Mapping[str, str], user_data: str, token: str
) -> dict[str, Any]:
    """The ``RunInstances`` parameters of one candidate: a function of its arguments only.

    The metadata service takes IMDSv2 session tokens only, with a hop limit of
    :data:`IMDS_HOP_LIMIT` (1): its answers do not cross a second network hop, so a container
    with bridged networking, or anything the instance forwards packets for, cannot reach the
    instance profile's credentials. The agent (boto3's credential chain, the spot watch) and the
    stage commands it runs are processes on the instance itself, one hop away, so nothing of
    ours needs 2; a startup script that runs containers which need the instance profile would.
    The hop limit alone does not keep a process on the instance itself from the credentials:
    keeping stage commands from them is the job of the sandbox the agent runs them in (no
    network), and the instance profile must grant no more than the job's S3 prefixes anyway.
    """
    tag_list = [{"Key": key, "Value": value} for key, value in tags.items()]
    args: dict[str, Any] = {
        "ImageId": ami,
        "InstanceType": candidate.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "ClientToken": token,
        "UserData": user_data,
        "InstanceInitiatedShutdownBehavior": "terminate",
        "BlockDeviceMappings": [
            {
                "DeviceName": "/dev/sda1",
                "Ebs": {"VolumeSize": spec.hdd_size_gb, "VolumeType": "gp3", "DeleteOnTermination": True},
            }
        ],
        "MetadataOptions": {  # IMDSv2 only, answering the instance's own processes only
            "HttpTokens": "required",
            "HttpEndpoint": "enabled",
            "HttpPutResponseHopLimit": IMDS_HOP_LIMIT,
        },
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tag_list},
            {"ResourceType": "volume", "Tags": tag_list},
        ],
    }
    if candidate.availability_zone:
        args["Placement"] = {"AvailabilityZone": candidate.availability_zone}
    if spec.instance_profile:
        key = "Arn" if spec.instance_profile.startswith("arn:") else "Name"
        args["IamInstanceProfile"] = {key: spec.instance_profile}
    if spec.subnet_id:
        args["SubnetId"] = spec.subnet_id
    if spec.security_group_ids:
        args["SecurityGroupIds"] = list(spec.security_group_ids)
    if candidate.market is Market.SPOT:
        options: dict[str, Any] = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
        if spec.spot_max_price is not None:
            options["MaxPrice"] = f"{spec.spot_max_price:g}"
        args["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": options}
    return args


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        return (response.get("Error") or {}).get("Code")
    return None


def launch(
    client: Any,
    spec: GpuInstanceSpec,
    *,
    run_key: str,
    tags: Mapping[str, str],
    user_data: str,
    generation: int = 0,
    ami: str | None = None,
    log: Callable[[str], None] | None = None,
    expires_at: datetime | None = None,
) -> LaunchResult:
    """Start the instance of ``run_key``, or adopt the one an earlier try started.

    First looks for a pending or running instance tagged ``mlci:run_key=<run_key>`` and returns
    it (``adopted=True``). Otherwise calls ``RunInstances`` for each candidate of the spec in
    turn, with a deterministic ``ClientToken``, moving on after a capacity-type error, until one
    starts or ``spec.max_launch_attempts`` calls were made. An instance returned already
    shutting down or terminated (its token was used by a run that was cleared after its
    teardown) makes the launch start over with the next generation of tokens.

    Every try of a task sends the same parameters (with the same ``spec``, ``tags``,
    ``user_data`` and AMI), so EC2 answers a repeated ``ClientToken`` with the first try's
    instance even while ``DescribeInstances`` does not show it yet. Once launched or adopted,
    an instance without an ``mlci:expires_at`` tag gets one (see :func:`instance_deadline`).

    :param client: a boto3 EC2 client
    :param spec: the instance
    :param run_key: the launching task's run key (:func:`run_key`)
    :param tags: the instance's tags (:func:`instance_tags`; must include ``mlci:run_key``)
    :param user_data: the boot script (:func:`boot_script`)
    :param generation: the first generation of client tokens to use
    :param ami: the image; default: ``spec.ami`` (one of them must be set)
    :param log: called with a line for each step worth telling
    :param expires_at: the deadline to tag an instance with that has none yet; default: its
        ``LaunchTime`` + ``mlci:max_lifetime``
    :raises GpuCapacityError: no candidate had capacity (the message lists every attempt)
    :raises GpuProvisioningError: EC2 refused the launch for another reason (code and candidate named)
    """
    say = log or (lambda _line: None)
    image = ami or spec.ami
    if not image:
        raise MlciConfigError("No AMI to launch: set GpuInstanceSpec.ami, or let the hook find the Deep Learning AMI.")
    tags = dict(tags)
    tags.setdefault("mlci:max_lifetime", str(spec.max_lifetime))  # the reaper's deadline if no other is written
    tags["mlci:run_key"] = run_key
    existing = find_instances(client, tags={"mlci:owner": OWNER, "mlci:run_key": run_key}, states=ALIVE_STATES)
    if existing:
        instance = existing[0]
        say(f"Adopting instance {instance['InstanceId']}, which an earlier try of this task launched")
        result = _result(instance, adopted=True, attempts=[], generation=generation)
        return _with_deadline(client, result, instance, tags=tags, expires_at=expires_at, say=say)

    candidates = spec.candidates()
    attempts: list[dict[str, Any]] = []
    calls = 0
    while calls < spec.max_launch_attempts:
        restart = False
        for index, candidate in enumerate(candidates):
            if calls >= spec.max_launch_attempts:
                break
            calls += 1
            token = client_token(run_key, generation, index)
            args = _run_instances_args(spec, candidate, ami=image, tags=tags, user_data=user_data, token=token)
            try:
                response = client.run_instances(**args)
            except Exception as exc:
                code = _error_code(exc)
                if code is None:
                    raise
                attempts.append({**_attempt(candidate), "error": code})
                if code in CAPACITY_ERRORS:
                    say(f"No capacity for {candidate.describe()} ({code}); trying the next candidate")
                    continue
                if code == "IdempotentParameterMismatch":
                    # An earlier try used this token with other parameters (the DAG's spec, or the
                    # Deep Learning AMI, changed between tries): that instance is ours; adopt it if
                    # it runs, else start a new generation.
                    found = find_instances(client, tags={"mlci:owner": OWNER, "mlci:run_key": run_key})
                    if found:
                        say(f"Adopting instance {found[0]['InstanceId']} (client token {token} already used)")
                        result = _result(found[0], adopted=True, attempts=attempts, generation=generation)
                        return _with_deadline(client, result, found[0], tags=tags, expires_at=expires_at, say=say)
                    generation += 1
                    restart = True
                    break
                raise GpuProvisioningError(
                    f"EC2 refused to launch {candidate.describe()}: {code}: {_error_message(exc)}"
                ) from exc
            instance = response["Instances"][0]
            state = (instance.get("State") or {}).get("Name")
            if state in _GONE_STATES:
                say(
                    f"Client token {token} returned instance {instance['InstanceId']}, already {state}: "
                    "launching a new generation"
                )
                generation += 1
                restart = True
                break
            say(f"Launched instance {instance['InstanceId']}: {candidate.describe()}")
            result = _result(instance, adopted=False, attempts=attempts, generation=generation)
            result.instance_type = result.instance_type or candidate.instance_type
            result.market = candidate.market.value
            result.availability_zone = result.availability_zone or candidate.availability_zone
            result.tags = result.tags or dict(tags)
            return _with_deadline(client, result, instance, tags=tags, expires_at=expires_at, say=say)
        if not restart:
            break
    tried = "; ".join(
        f"{a['instance_type']} in {a['availability_zone'] or 'any zone'} ({a['market']}): {a['error']}"
        for a in attempts
    )
    raise GpuCapacityError(
        f"No GPU capacity after {len(attempts)} launch attempt(s) (max_launch_attempts={spec.max_launch_attempts}). "
        f"Tried: {tried or 'nothing'}. Add fallback_instance_types or availability_zones, or retry later."
    )


def _with_deadline(
    client: Any,
    result: LaunchResult,
    instance: Mapping[str, Any],
    *,
    tags: Mapping[str, str],
    expires_at: datetime | None,
    say: Callable[[str], None],
) -> LaunchResult:
    """Tag the instance's deadline if it has none yet; set ``result.expires_at``.

    Best effort: an instance whose tag cannot be written still has its ``LaunchTime`` and
    ``mlci:max_lifetime``, which the reaper reads (:func:`instance_deadline`).
    """
    known = {**dict(tags), **_tags_of(instance)}
    if _parse_time(known.get("mlci:expires_at")) is None:
        if expires_at is None:
            launched = instance.get("LaunchTime")
            if not isinstance(launched, datetime):  # EC2 always says; count from now if it did not
                launched = datetime.now(UTC)
            lifetime = known.get("mlci:max_lifetime", "")
            lifetime = lifetime if lifetime.isdigit() else tags["mlci:max_lifetime"]
            expires_at = launched + timedelta(seconds=int(lifetime))
        value = _format_time(expires_at)
        try:
            client.create_tags(Resources=[result.instance_id], Tags=[{"Key": "mlci:expires_at", "Value": value}])
        except Exception as exc:  # the reaper falls back to LaunchTime + mlci:max_lifetime
            say(f"Could not tag instance {result.instance_id} with mlci:expires_at={value}: {exc}")
        else:
            known["mlci:expires_at"] = value
            result.tags = {**result.tags, "mlci:expires_at": value}
    deadline = instance_deadline({**instance, "Tags": [{"Key": k, "Value": v} for k, v in known.items()]})
    result.expires_at = _format_time(deadline) if deadline else None
    return result


def _attempt(candidate: LaunchCandidate) -> dict[str, Any]:
    return {
        "instance_type": candidate.instance_type,
        "availability_zone": candidate.availability_zone,
        "market": candidate.market.value,
    }


def _error_message(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        return str((response.get("Error") or {}).get("Message") or exc)
    return str(exc)


# ---------------------------------------------------------------------------------- terminate, reap


def terminate(client: Any, instance_ids: Iterable[str]) -> list[str]:
    """Terminate instances without waiting; return the ids EC2 accepted. Idempotent.

    Terminating an instance that is already terminated is no error; ids EC2 does not know
    (or cannot parse) are skipped.

    :param client: a boto3 EC2 client
    :param instance_ids: the instances
    """
    ids = list(dict.fromkeys(i for i in instance_ids if i))
    if not ids:
        return []
    try:
        response = client.terminate_instances(InstanceIds=ids)
    except Exception as exc:
        code = _error_code(exc) or ""
        if not code.startswith("InvalidInstanceID") or len(ids) == 1:
            if code.startswith("InvalidInstanceID"):
                return []
            raise
        done: list[str] = []
        for instance_id in ids:  # one unknown id fails the whole call: go one by one
            done += terminate(client, [instance_id])
        return done
    return [item["InstanceId"] for item in response.get("TerminatingInstances", [])]


@dataclass(kw_only=True)
class ReapReport:
    """What the reaper found: our live instances, the leaks among them, what it terminated."""

    checked: int
    leaks: list[dict[str, Any]]
    terminated: list[str]
    dry_run: bool

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON."""
        return asdict(self)

    def describe(self) -> str:
        """One line per leak: id, type, run, reason."""
        return "\n".join(
            f"{leak['instance_id']} ({leak['instance_type']}, {leak['state']}) of {leak['dag_id']}/{leak['run_id']}"
            f"/{leak['task_id']}: {leak['reason']}"
            for leak in self.leaks
        )


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def reap(
    client: Any,
    *,
    now: datetime,
    run_is_active: Callable[[str, str], bool | None],
    dry_run: bool = True,
) -> ReapReport:
    """Find our instances that should be gone, and terminate them unless ``dry_run``.

    Ours: tagged ``mlci:owner``, not terminated. A leak: its deadline (:func:`instance_deadline`:
    its ``mlci:expires_at``, or its ``LaunchTime`` + ``mlci:max_lifetime``) has passed, or it has
    none, or ``run_is_active(dag_id, run_id)`` says its DAG run has ended (``False``; ``None``
    means unknown and leaves it to the deadline).

    :param client: a boto3 EC2 client
    :param now: the current time (timezone-aware)
    :param run_is_active: whether a DAG run is still queued or running
    :param dry_run: only report
    """
    instances = find_instances(client, tags={"mlci:owner": OWNER}, states=NOT_TERMINATED_STATES)
    runs: dict[tuple[str, str], bool | None] = {}
    leaks: list[dict[str, Any]] = []
    for instance in instances:
        tags = _tags_of(instance)
        dag_id, run_id = tags.get("mlci:dag_id", ""), tags.get("mlci:run_id", "")
        expires_at = instance_deadline(instance)
        reason = None
        if expires_at is None:
            reason = "it has no valid mlci:expires_at or mlci:max_lifetime tag"
        elif expires_at <= now:
            reason = f"its deadline {_format_time(expires_at)} has passed"
        elif dag_id and run_id:
            if (dag_id, run_id) not in runs:
                runs[dag_id, run_id] = run_is_active(dag_id, run_id)
            if runs[dag_id, run_id] is False:
                reason = f"its DAG run {dag_id}/{run_id} has ended"
        if reason is None:
            continue
        leaks.append(
            {
                "instance_id": instance["InstanceId"],
                "instance_type": instance.get("InstanceType", ""),
                "state": (instance.get("State") or {}).get("Name", ""),
                "launch_time": str(instance.get("LaunchTime", "")),
                "dag_id": dag_id,
                "run_id": run_id,
                "task_id": tags.get("mlci:task_id", ""),
                "expires_at": _format_time(expires_at) if expires_at else None,
                "reason": reason,
            }
        )
    terminated = [] if dry_run else terminate(client, [leak["instance_id"] for leak in leaks])
    return ReapReport(checked=len(instances), leaks=leaks, terminated=terminated, dry_run=dry_run)


# ---------------------------------------------------------------------------------- AMI


def find_ami(
    ec2_client: Any,
    ssm_client: Any | None,
    *,
    ssm_parameter: str = DLAMI_SSM_PARAMETER,
    name_pattern: str = DLAMI_NAME_PATTERN,
    owners: Sequence[str] = ("amazon",),
) -> str:
    """The current AWS Deep Learning AMI: from its public SSM parameter, else the newest by name.

    :param ec2_client: a boto3 EC2 client
    :param ssm_client: a boto3 SSM client (``None``: by name only)
    :param ssm_parameter: the SSM parameter holding the AMI id
    :param name_pattern: the image name pattern (``*`` wildcards) to look for otherwise
    :param owners: image owners to look among
    :raises GpuProvisioningError: neither finds an image
    """
    if ssm_client is not None:
        try:
            value = ssm_client.get_parameter(Name=ssm_parameter)["Parameter"]["Value"]
        except Exception as exc:
            if _error_code(exc) is None:
                raise
        else:
            if value:
                return str(value)
    images = ec2_client.describe_images(
        Owners=list(owners),
        Filters=[{"Name": "name", "Values": [name_pattern]}, {"Name": "state", "Values": ["available"]}],
    ).get("Images", [])
    if not images:
        raise GpuProvisioningError(
            f"No AMI found: the SSM parameter {ssm_parameter!r} is not readable and no image named "
            f"{name_pattern!r} is owned by {list(owners)}. Set GpuInstanceSpec.ami."
        )
    newest = max(images, key=lambda image: (image.get("CreationDate", ""), image["ImageId"]))
    return str(newest["ImageId"])
