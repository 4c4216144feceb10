"""One factory for every `tf.distribute` strategy the trainer runs under, with clear startup errors.

    default                 no distribution (CPU, or one GPU)
    one_device              `device` (e.g. /gpu:0)
    mirrored                all local GPUs, or `devices`
    multi_worker_mirrored   hosts described by TF_CONFIG (see launch.run)
    tpu                     `tpu="local"` on a single-host TPU VM, or the TPU's name from worker 0
                            of a pod slice (TPUStrategy is single-client: see `_tpu_strategy`)
"""

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from typing import Optional

import tensorflow as tf

from pretrain import choices, run_config

STRATEGIES = choices.STRATEGIES   # the names above; the config's distribute.name
_DEFAULTS = run_config.DistributeConfig()


class StrategyError(RuntimeError):
    """The requested strategy cannot be created here; the message says why."""


@dataclasses.dataclass
class WorkerInfo:
    task_type: Optional[str]
    task_id: int
    num_workers: int

    @property
    def is_chief(self):
        # With TF_CONFIG, the chief is the task "chief", or worker 0 when there is no chief task.
        return self.task_type in (None, "chief") or (self.task_type == "worker" and self.task_id == 0
                                                     and not _has_chief())


def _has_chief():
    return "chief" in json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})


def parse_tf_config():
    """Validates TF_CONFIG; returns it as a dict ({} when unset)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return {}
    try:
        tf_config = json.loads(raw)
    except ValueError as e:
        raise StrategyError("TF_CONFIG is not valid JSON (%s): %r" % (e, raw[:200]))
    cluster, task = tf_config.get("cluster"), tf_config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise StrategyError("TF_CONFIG needs a non-empty 'cluster' dict, e.g. "
                            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                            '"task": {"type": "worker", "index": 0}}; got %r' % raw[:200])
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise StrategyError("TF_CONFIG needs 'task': {'type': ..., 'index': ...}; got %r" % raw[:200])
    if task["type"] not in cluster:
        raise StrategyError("TF_CONFIG task type %r is not in the cluster (%s)"
                            % (task["type"], ", ".join(cluster)))
    if not 0 <= int(task["index"]) < len(cluster[task["type"]]):
        raise StrategyError("TF_CONFIG task index %s is out of range for %d %s task(s)"
                            % (task["index"], len(cluster[task["type"]]), task["type"]))
    for kind, hosts in cluster.items():
        for host in hosts:
            if ":" not in host:
                raise StrategyError("TF_CONFIG %s address %r has no port" % (kind, host))
    return tf_config


def make_strategy(name=_DEFAULTS.name, device=_DEFAULTS.device, devices=_DEFAULTS.devices,
                  tpu=_DEFAULTS.tpu):
    """The strategy of a config's `distribute` section (`make_strategy(**fields)`); an empty
    device is /cpu:0, empty devices every local GPU."""
    if name not in STRATEGIES:
        raise StrategyError("Unknown strategy %r (one of %s)" % (name, ", ".join(STRATEGIES)))
    tasks = sum(len(hosts) for hosts in parse_tf_config().get("cluster", {}).values())
    if tasks > 1 and name in ("default", "one_device", "mirrored"):
        raise StrategyError("TF_CONFIG describes %d workers but strategy %r trains in this process "
                            "alone (each worker would train its own model): set "
                            "--config.distribute.name=multi_worker_mirrored." % (tasks, name))
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(device or "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    if name == "multi_worker_mirrored":
        if not parse_tf_config():
            raise StrategyError("multi_worker_mirrored needs TF_CONFIG (start the workers with "
                                "`python -m launch.run --nnodes=... -m launch.pretrain ...`).")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return _tpu_strategy(tpu)


def _tpu_strategy(tpu):
    """TPUStrategy, single-client: this one process drives every host of the slice.

    On a single-host slice (v4-8, v5e-8, ...) tpu="local" reaches the chips of this VM. On a pod
    slice (several hosts) the process runs on worker 0 only, with tpu=<the TPU's name> and
    TPU_LOAD_LIBRARY=0 (set before TensorFlow is imported, so that this client does not take the
    local chips that the host's TPU runtime serves to the slice); nothing runs on the other hosts.
    """
    if not tpu:
        raise StrategyError("strategy 'tpu' needs distribute.tpu='local' (a single-host TPU VM) or "
                            "the TPU's name (a pod slice, from its worker 0).")
    worker = tpu_worker_number()
    if worker:
        raise StrategyError(
            "This TPU VM is worker %d of its slice. TensorFlow's TPUStrategy is single-client: one "
            "process on worker 0 drives every host of the slice, and nothing runs on the others. "
            "Start the program on worker 0 only (`python -m launch.tpu_vm run` does)." % worker)
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        if tpu != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as e:  # TF raises ValueError/NotFoundError/RuntimeError depending on the failure
        raise StrategyError(
            "Cannot reach TPU %r: %s. On a single-host TPU VM use distribute.tpu='local'; for a pod "
            "slice use the TPU's name and run on worker 0 only (python -m launch.tpu_vm run)."
            % (tpu, e))
    return tf.distribute.TPUStrategy(resolver)


# The index of this host in its TPU slice, from the TPU VM's metadata.
_WORKER_NUMBER_URL = ("http://metadata.google.internal/computeMetadata/v1/instance/attributes/"
                      "agent-worker-number")


def tpu_worker_number(timeout: float = 2.0) -> Optional[int]:
    """This host's index in its TPU slice (0 = worker 0), or None when it is not a TPU VM.

    Read from the TPU VM metadata attribute `agent-worker-number`; the environment variable
    TPU_WORKER_ID, when set, takes precedence (tests, or a runtime that exports it).
    """
    if os.environ.get("TPU_WORKER_ID", "").strip().isdigit():
        return int(os.environ["TPU_WORKER_ID"])
    import urllib.error
    import urllib.request

    request = urllib.request.Request(_WORKER_NUMBER_URL, headers={"Metadata-Flavor": "Google"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.read().decode().strip())
    except (OSError, ValueError, urllib.error.URLError):
        return None


_GATHER = {}


def gather_int(strategy, value: int):
    """An integer in [0, 2**48) from every replica of every worker: a numpy int64 array.

    One all-gather of float32 pairs (value // 2**24, value % 2**24), each exact in float32:
    float32 collectives exist everywhere (NCCL, gRPC/ring, XLA on TPUs), while integer ones are
    not registered for every device and build (no int32 all-reduce on GPUs, no int64 on TPUs)."""
    if not 0 <= value < 1 << 48:
        raise ValueError("gather_int takes 0 <= value < 2**48, got %d" % value)
    if strategy not in _GATHER:   # traced once per strategy
        _GATHER[strategy] = tf.function(lambda v: strategy.run(
            lambda x: tf.distribute.get_replica_context().all_gather(x[None], axis=0), args=(v,)))
    high, low = divmod(int(value), 1 << 24)
    with strategy.scope():
        gathered = _GATHER[strategy](tf.constant([high, low], tf.float32))
    pairs = strategy.experimental_local_results(gathered)[0].numpy().astype("int64")
    return (pairs[:, 0] << 24) | pairs[:, 1]


def worker_info(strategy) -> WorkerInfo:
    resolver = getattr(strategy, "cluster_resolver", None)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and resolver is not None:
        spec = resolver.cluster_spec().as_dict()
        workers = sum(len(v) for k, v in spec.items() if k in ("chief", "worker"))
        return WorkerInfo(resolver.task_type, int(resolver.task_id or 0), max(workers, 1))
    return WorkerInfo(None, 0, 1)


def checkpoint_dir(workdir_checkpoints: str, info: WorkerInfo):
    """The chief writes into the workdir; other workers must also save (TensorFlow needs every
    worker in a synchronous save) but into a local temporary directory, removed afterwards.

    Its name is fixed by (workdir, task), so what a worker killed mid-run left behind is found
    and removed when it restarts, instead of piling up in /tmp.
    """
    if info.is_chief:
        return workdir_checkpoints, None
    key = hashlib.sha256(workdir_checkpoints.encode("utf-8")).hexdigest()[:12]
    tmp = os.path.join(tempfile.gettempdir(), "ckpt_%s_%d_%s" % (info.task_type, info.task_id, key))
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    return tmp, tmp
