"""The ``lrpjax`` command: ``lrpjax attribute`` (explain a dataset) and ``lrpjax demo``.

Installed as a console script (``[project.scripts] lrpjax = "lrpjax.cli:main"``); without installing,
run ``python -m lrpjax.cli ...``. Exit status: 0 on success, 2 for a problem to fix in the command
(model spec, input, output directory, options; one line on stderr), 1 for an unexpected failure.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from typing import Optional, Sequence

import jax

# `import lrpjax` (JAX) is most of the start-up of any command (`lrpjax --help` too); demo adds optax
# and report pyarrow, about 0.2 s together. None of them starts JAX's backend, which --distributed
# must initialise first.
from lrpjax import demo, report
from lrpjax._checks import DEFAULT_BIAS_FACTOR, DEFAULT_EPS, DEFAULT_GATE, GATE_RULES, one_line
from lrpjax.jobs import ERRORS, METHODS, JobError, attribute_dataset
from lrpjax.jobs.spec import as_model_spec, callable_name
from lrpjax.jobs.sync import announce_failure

PROG = "lrpjax"

ATTRIBUTE_EPILOG = """\
examples:
  # a factory in a file: my_model.py defines  def make(checkpoint="ckpt.npz"): ... return apply
  lrpjax attribute --model my_model.py:make --data data.npz --out attributions/

  # a dotted module, factory arguments, the true class, options of the LRP rules
  lrpjax attribute --model mypkg.models:sentiment --model-arg size=large --data reviews.jsonl \\
      --out out/ --target true --eps 0.01 --gate half --bias-factor 1.0 --max-length 128

  # resume after an interruption: run the same command again (finished shards are skipped)

the model factory:
  MODULE is a dotted module name (importable from the current directory or PYTHONPATH) or a path to a
  .py file; FACTORY is a function in it. It is called as FACTORY(**model_args), where every
  --model-arg KEY=VALUE is passed as a *string* keyword argument (convert them yourself, e.g.
  int(hidden)), and returns one of
    * an lrpjax.jobs.ModelSpec(apply, name=..., tokenizer=..., vocab=..., unk_id=..., features=...),
    * a callable apply(x, lengths) -> logits (B, C), for float inputs x (B, T, F) float32 and
      lengths (B,) int32,
    * a tuple (apply, tokenizer) for text: tokenizer(str) -> list of token ids (None or -1 = unknown),
      apply(ids, lengths) gets int32 ids (B, T) and must embed them with a Flax Embed or
      lrpjax.rules.embed_lookup.

input formats (--data):
  .npz      x (N, T_max, F), optional lengths (N,), labels (N,), ids (N,)   (x memory-mapped if the
            archive is uncompressed, i.e. written with np.savez)
  .npy      (N, T, F), every sequence full length (memory-mapped)
  .jsonl    one object per line: "x" (list of T lists of F numbers) or "text"; optional "label", "id"
  .parquet  the same columns as .jsonl
  other     a text file, one example per line, optionally "LABEL<TAB>text"

output (--out): part-NNNNN.parquet (one per shard: index, id, label, length, target, score,
  relevance [, relevance_full] [, tokens]), errors.parquet (index, id, reason), manifest.json.
  Read with pyarrow: pq.ParquetDataset(sorted(glob.glob("out/part-*.parquet"))).read()

several processes or hosts (--distributed):
  Start the same command once per process, each with its own --process-id. It calls
  jax.distributed.initialize(); process I of N explains the input shards k with k % N == I (each
  process reads the whole input but checks and explains only its shards, on its own local devices),
  and all write into one --out directory that every process can reach (a shared filesystem, the same
  path everywhere). Process 0 sets up --out and, once all have finished, merges errors.parquet and
  completes manifest.json: the result equals a single-process run, and re-running the same commands
  resumes. Two processes on one machine (CPU is fine):

    lrpjax attribute --model my_model.py:make --data data.npz --out attr/ --distributed \\
        --coordinator 127.0.0.1:12345 --num-processes 2 --process-id 0 &
    lrpjax attribute --model my_model.py:make --data data.npz --out attr/ --distributed \\
        --coordinator 127.0.0.1:12345 --num-processes 2 --process-id 1

  On several hosts give process 0's host name or address and a free port. Flags left out come from
  the environment: JAX reads JAX_COORDINATOR_ADDRESS (HOST:PORT; also JAX_COORDINATOR_BIND_ADDRESS
  and JAX_LOCAL_DEVICE_IDS), lrpjax reads JAX_NUM_PROCESSES and JAX_PROCESS_ID (JAX 0.10 itself does
  not), and under Slurm (SLURM_*), Open MPI (OMPI_*), Cloud TPU or a Kubernetes indexed Job JAX
  detects all three. If a process fails, the others stop with an error naming it; run all again to
  resume.
"""


def _target(value: str):
    if value in ("pred", "true"):
        return value
    try:
        k = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'pred', 'true' or a class index, got {value!r}")
    if k < 0:
        raise argparse.ArgumentTypeError(f"a class index must be >= 0, got {k}")
    return k


def _int_at_least(minimum: int, what: str):
    """argparse type: an int >= ``minimum``, errors saying it must be ``what``."""
    def parse(value: str) -> int:
        try:
            k = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value!r}")
        if k < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {k}")
        return k
    parse.__name__ = what
    return parse


_positive = _int_at_least(1, "a positive integer")
_non_negative = _int_at_least(0, "an integer >= 0")


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"must be HOST:PORT (process 0's address and a free port), "
                                         f"got {value!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``lrpjax`` argument parser (subcommands ``attribute``, ``demo``, ``report``, ``evaluate``)."""
    ap = argparse.ArgumentParser(prog=PROG, description="Layer-wise Relevance Propagation for "
                                 "recurrent networks in JAX: dataset-wide attribution jobs.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_attribute_parser(sub)
    dm = sub.add_parser("demo", help="train a small LSTM on the adding task and explain 10,000 "
                        "sequences with a dataset job",
                        description="Train a small LSTM on the adding task (sequences of 10..30 "
                        "steps, two of them marked; target = the sum of their values), explain 10,000 "
                        "held-out sequences with a dataset job, and print the share of |relevance| on "
                        "the marked steps, the throughput, the compilations and where the Parquet "
                        "output is.")
    demo.add_arguments(dm)
    rp = sub.add_parser("report", help="turn a job's output directory into one HTML page",
                        description="Read a job's output (part-*.parquet, manifest.json, errors.parquet) "
                        "and write one self-contained HTML page: counts and error reasons, method and "
                        "rule options, score and relevance statistics, the examples with the most "
                        "positive and most negative total relevance as heatmaps, relevance over "
                        "positions, library versions. Example: lrpjax report attributions/")
    report.add_arguments(rp)
    _add_evaluate_parser(sub)
    return ap


def _add_evaluate_parser(sub) -> None:
    """``lrpjax evaluate``: explain with several methods, score with several metrics, summarise."""
    ev = sub.add_parser(
        "evaluate", help="score explanations of a dataset with faithfulness metrics",
        description="Explain every example with each --methods entry (an attribution job each, under "
                    "OUT/attributions/), score every explanation with each --metrics entry (OUT/scores/, "
                    "one row per example, method and metric) and print the mean per method and metric "
                    "with a 95%% bootstrap interval (OUT/summary.json). Re-running resumes. Example: "
                    "lrpjax evaluate --model my_model.py:make --data data.npz --out eval/ "
                    "--methods lrp,integrated_gradients --metrics pixel_flipping,faithfulness_correlation")
    ev.add_argument("--model", required=True, metavar="MODULE:FACTORY", help="as for lrpjax attribute")
    ev.add_argument("--data", required=True, metavar="PATH", help="float input (.npz, .npy, .jsonl, .parquet)")
    ev.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    ev.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="keyword argument for FACTORY (repeatable)")
    ev.add_argument("--methods", default="lrp", metavar="M1,M2",
                    help=f"comma-separated attribution methods from {', '.join(jobs_methods())} (default lrp)")
    ev.add_argument("--metrics", default="pixel_flipping", metavar="NAME1,NAME2",
                    help="comma-separated metrics (default pixel_flipping); see docs/evaluation.md")
    ev.add_argument("--seed", type=_non_negative, default=0, help="seed of the perturbations and bootstrap")
    ev.add_argument("--bootstrap", type=_positive, default=1000, metavar="N", help="bootstrap resamples")
    ev.add_argument("--target", type=_target, default="pred", metavar="pred|true|K",
                    help="explained class: pred (argmax, default), true (the label) or an index")
    _add_run_arguments(ev)


def _evaluate(args) -> int:
    from lrpjax.jobs.evaluate import evaluate_dataset
    _use_compilation_cache(args.compilation_cache)
    spec = load_model(args.model, args.model_arg)
    progress = {"auto": None, "tqdm": "tqdm", "log": "log", "none": False}[args.progress]
    split = lambda v: [m.strip() for m in v.split(",") if m.strip()]
    s = evaluate_dataset(spec, args.data, args.out, methods=split(args.methods), metrics=split(args.metrics),
                         target=args.target, batch_size=args.batch_size, shard_size=args.shard_size,
                         bucket_step=args.bucket_step, max_length=args.max_length, seed=args.seed,
                         n_bootstrap=args.bootstrap, overwrite=args.overwrite, progress=progress,
                         strict=not args.no_strict)
    print(s.table())
    print(f"{PROG} evaluate: {s.n_shards_scored} shard(s) scored, {s.n_shards_skipped} skipped (already "
          f"complete) -> {Path(s.out_dir) / 'summary.json'}")
    return 0


def _add_attribute_parser(sub) -> None:
    """``lrpjax attribute``: what to explain, how, where to write it, and several processes."""
    at = sub.add_parser(
        "attribute", help="explain every example of a dataset, write Parquet shards",
        description="Explain every example of a dataset with LRP (or a baseline method) and write the "
                    "per-step relevance to Parquet shards. Re-running the same command resumes.",
        epilog=ATTRIBUTE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    at.add_argument("--model", required=True, metavar="MODULE:FACTORY",
                    help="the model factory, e.g. my_model.py:make or mypkg.models:make (see below)")
    at.add_argument("--data", required=True, metavar="PATH",
                    help="input file: .npz, .npy, .jsonl, .parquet or text, e.g. --data data.npz")
    at.add_argument("--out", required=True, metavar="DIR",
                    help="output directory, created if missing, e.g. --out attributions/")
    at.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="keyword argument for FACTORY, passed as a string; repeatable, e.g. "
                         "--model-arg hidden=64 --model-arg checkpoint=ckpt.npz")
    _add_method_arguments(at)
    _add_run_arguments(at)
    _add_distributed_arguments(at.add_argument_group("several processes or hosts (see below)"))


def _add_method_arguments(at) -> None:
    """The attribution method, its options and the LRP rule options."""
    at.add_argument("--method", choices=jobs_methods(), default="lrp",
                    help="lrp (default) or a baseline for comparison: gradient (of the target logit), "
                         "gradient_x_input, sensitivity (squared gradient norm per step), "
                         "integrated_gradients, occlusion (per step), random (seeded per example); "
                         "e.g. --method integrated_gradients --method-arg steps=64")
    at.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="option of the baseline method, repeatable: integrated_gradients steps=N, "
                         "baseline=V, batch_size=N; occlusion value=V, batch_size=N; random seed=N; "
                         "e.g. --method occlusion --method-arg value=0.5")
    at.add_argument("--target", type=_target, default="pred", metavar="pred|true|K",
                    help="class to explain: pred = the argmax (default), true = the example's label, "
                         "or a class index, e.g. --target 1")
    at.add_argument("--eps", type=float, default=DEFAULT_EPS, metavar="E",
                    help=f"epsilon-rule stabiliser > 0 (default {DEFAULT_EPS:g}), e.g. --eps 0.01")
    at.add_argument("--bias-factor", type=float, default=DEFAULT_BIAS_FACTOR, metavar="B",
                    help="0 = biases absorb their share (default), 1 = exact conservation, e.g. "
                         "--bias-factor 1")
    at.add_argument("--gate", choices=GATE_RULES, default=DEFAULT_GATE,
                    help=f"rule for gated products (default {DEFAULT_GATE} = signal-take-all), e.g. "
                         f"--gate half")
    at.add_argument("--full", action="store_true",
                    help="also write relevance_full: length x F per example (float inputs only)")


def _add_run_arguments(at) -> None:
    """Lengths, batching, sharding, resuming, strictness, progress and the compilation cache."""
    at.add_argument("--max-length", type=_positive, default=None, metavar="L",
                    help="longer examples go to errors.parquet; caps the padded length, e.g. "
                         "--max-length 512")
    at.add_argument("--batch-size", type=_positive, default=256, metavar="N",
                    help="rows per device call, split over all local devices (default 256), e.g. "
                         "--batch-size 64")
    at.add_argument("--bucket-step", type=_positive, default=8, metavar="S",
                    help="pad each batch to the next multiple of S steps: one compilation per "
                         "bucket (default 8)")
    at.add_argument("--shard-size", type=_positive, default=4096, metavar="S",
                    help="examples per output file, the unit of resuming (default 4096), e.g. "
                         "--shard-size 1000")
    at.add_argument("--overwrite", action="store_true",
                    help="replace a job with other settings in --out (otherwise refused)")
    at.add_argument("--no-strict", action="store_true",
                    help="operations without an LRP rule use their plain gradient (with a warning) "
                         "instead of being refused")
    at.add_argument("--progress", choices=("auto", "tqdm", "log", "none"), default="auto",
                    help="auto (default): a progress bar on a terminal, a log line every 10 s otherwise")
    at.add_argument("--compilation-cache", metavar="DIR",
                    default=os.environ.get("LRPJAX_COMPILATION_CACHE") or None,
                    help="keep XLA's compiled buckets in DIR (JAX's persistent compilation cache) so that "
                         "the next run of the same model skips compiling (default: "
                         "$LRPJAX_COMPILATION_CACHE, else none), e.g. --compilation-cache ~/.cache/lrpjax")
    at.add_argument("--traceback", action="store_true",
                    help="show the full traceback of errors (for debugging a model factory)")


def _add_distributed_arguments(dist) -> None:
    """``--distributed`` and where the processes find each other."""
    dist.add_argument("--distributed", action="store_true",
                      help="one of several processes: call jax.distributed.initialize() first, then "
                           "explain only this process's share of the shards")
    dist.add_argument("--coordinator", type=_host_port, default=None, metavar="HOST:PORT",
                      help="process 0's address and a free port, the same for every process (default: "
                           "$JAX_COORDINATOR_ADDRESS, or detected by JAX), e.g. --coordinator "
                           "10.0.0.1:12345")
    dist.add_argument("--num-processes", type=_positive, default=None, metavar="N",
                      help="number of processes (default: $JAX_NUM_PROCESSES, or detected by JAX), "
                           "e.g. --num-processes 2")
    dist.add_argument("--process-id", type=_non_negative, default=None, metavar="I",
                      help="this process's id in 0..N-1 (default: $JAX_PROCESS_ID, or detected by "
                           "JAX), e.g. --process-id 0")
    dist.add_argument("--init-timeout", type=_positive, default=None, metavar="S",
                      help="seconds to wait for all processes to connect at the start (default 300)")


def jobs_methods() -> tuple:
    """The ``--method`` choices (:data:`lrpjax.jobs.METHODS`)."""
    return METHODS


def _parse_model_args(items: Sequence[str], flag: str = "--model-arg") -> dict:
    kwargs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise JobError(f"{flag} must be KEY=VALUE with KEY a Python identifier, got {item!r}.")
        kwargs[key.strip()] = value
    return kwargs


def _import_module(ref: str):
    is_path = ref.endswith(".py") or os.sep in ref or (os.altsep and os.altsep in ref)
    if is_path:
        path = Path(ref).expanduser().resolve()
        if not path.is_file():
            raise JobError(f"model file not found: {ref} (--model PATH.py:FACTORY).")
        name = "lrpjax_user_model_" + hashlib.sha1(str(path).encode()).hexdigest()[:10]
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent))      # the model file may import its neighbours
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[name]
            raise JobError(f"importing the model file {ref} failed: {type(e).__name__}: "
                           f"{one_line(e)}") from e
        return module
    if os.getcwd() not in sys.path:   # as `python -m` does: modules in the current directory
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(ref)
    except ModuleNotFoundError as e:
        raise JobError(f"cannot import the model module {ref!r} ({one_line(e)}); give a module "
                       f"importable from the current directory or PYTHONPATH, or a path to a .py "
                       f"file.") from e
    except Exception as e:
        raise JobError(f"importing the model module {ref!r} failed: {type(e).__name__}: "
                       f"{one_line(e)}") from e


def load_model(ref: str, model_args: Sequence[str] = ()):
    """``MODULE:FACTORY`` + ``KEY=VALUE`` strings -> :class:`lrpjax.jobs.ModelSpec`.

    >>> spec = load_model("tests/jobs_models.py:float_model", ["hidden=8"])   # doctest: +SKIP
    """
    module_ref, sep, factory_name = ref.rpartition(":")
    if not sep or not module_ref or not factory_name.isidentifier():
        raise JobError(f"--model must be MODULE:FACTORY (a module or .py file and a function in "
                       f"it), got {ref!r}.")
    kwargs = _parse_model_args(model_args)
    module = _import_module(module_ref)
    factory = getattr(module, factory_name, None)
    if factory is None or not callable(factory):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise JobError(f"{module_ref} has no callable {factory_name!r}; callables there: "
                       f"{', '.join(public[:12]) or 'none'}.")
    try:
        made = factory(**kwargs)
    except Exception as e:
        raise JobError(f"the model factory {ref}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) "
                       f"failed: {type(e).__name__}: {one_line(e)}") from e
    spec = as_model_spec(made)
    if spec.name == callable_name(spec.apply):   # not named by the factory: name it by the command
        args = ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
        spec = dataclasses.replace(spec, name=f"{ref}({args})")
    return spec


def _env_int(name: str, minimum: int) -> Optional[int]:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        k = int(value)
    except ValueError:
        k = None
    if k is None or k < minimum:
        raise JobError(f"the environment variable {name}={value!r} must be an integer >= {minimum}.")
    return k


DISTRIBUTED_HINT = ("check that every process gets the same --coordinator HOST:PORT (process 0's address "
                    "and a port free there, reachable from every process) and the same --num-processes N, "
                    "and its own --process-id in 0..N-1 (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                    "JAX_PROCESS_ID; JAX detects them itself only under Slurm, Open MPI, Cloud TPU and "
                    "Kubernetes), and that all N processes start within --init-timeout seconds (default "
                    "300).")


def _start_distributed(args) -> None:
    """``--distributed``: ``jax.distributed.initialize()`` -- before anything initialises JAX's backend
    (importing lrpjax does not; the model factory may)."""
    flags = {"--coordinator": args.coordinator, "--num-processes": args.num_processes,
             "--process-id": args.process_id, "--init-timeout": args.init_timeout}
    if not args.distributed:
        given = [f for f, v in flags.items() if v is not None]
        if given:
            raise JobError(f"{', '.join(given)} only apply to several processes: add --distributed.")
        return
    kwargs = {"coordinator_address": args.coordinator,
              "num_processes": args.num_processes if args.num_processes is not None
              else _env_int("JAX_NUM_PROCESSES", 1),
              "process_id": args.process_id if args.process_id is not None
              else _env_int("JAX_PROCESS_ID", 0)}
    if args.init_timeout is not None:
        kwargs["initialization_timeout"] = args.init_timeout
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as e:
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise JobError(f"--distributed: jax.distributed.initialize({shown}) failed: {type(e).__name__}: "
                       f"{one_line(e)[:300].rstrip('.')}; {DISTRIBUTED_HINT}") from e


def _use_compilation_cache(path: Optional[str]) -> None:
    """JAX's persistent compilation cache in ``path`` (every compilation kept, however quick)."""
    if not path:
        return
    d = Path(path).expanduser()
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise JobError(f"cannot create the compilation cache directory {d}: {e.strerror or e}; give a "
                       f"writable --compilation-cache.") from e
    jax.config.update("jax_compilation_cache_dir", str(d))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _attribute(args) -> int:
    _use_compilation_cache(args.compilation_cache)
    try:
        spec = load_model(args.model, args.model_arg)
    except BaseException as e:
        if args.distributed:
            announce_failure(e)       # the other processes would wait for this one
        raise
    progress = {"auto": None, "tqdm": "tqdm", "log": "log", "none": False}[args.progress]
    s = attribute_dataset(
        spec, args.data, args.out, method=args.method, batch_size=args.batch_size, eps=args.eps,
        bias_factor=args.bias_factor, gate=args.gate, target=args.target, full=args.full,
        max_length=args.max_length, bucket_step=args.bucket_step, shard_size=args.shard_size,
        overwrite=args.overwrite, progress=progress, strict=not args.no_strict,
        method_options=_parse_model_args(args.method_arg, "--method-arg"))
    if s.process_count == 1:
        print(f"{PROG} attribute: {s.n_examples} examples ({s.n_explained} explained, {s.n_errors} errors) "
              f"-> {s.out_dir}: {s.n_shards_written} shard(s) written, {s.n_shards_skipped} skipped "
              f"(already complete); {s.compilations} compilation(s); {s.seconds:.1f} s, "
              f"{s.examples_per_second:.0f} examples/s")
    else:
        print(f"{PROG} attribute: process {s.process_index} of {s.process_count}: {s.process_examples} "
              f"examples ({s.process_examples - s.process_errors} explained, {s.process_errors} errors): "
              f"{s.n_shards_written} shard(s) written, {s.n_shards_skipped} skipped (already complete); "
              f"{s.compilations} compilation(s); {s.seconds:.1f} s, {s.examples_per_second:.0f} examples/s")
        state = "complete" if s.complete else "not complete yet (other processes still working)"
        print(f"{PROG} attribute: job {state}: {s.n_examples} examples ({s.n_explained} explained, "
              f"{s.n_errors} errors) in {s.n_shards} shard(s) -> {s.out_dir}")
    if s.n_errors and s.complete:
        print(f"  bad examples and reasons: {Path(s.out_dir) / ERRORS}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``lrpjax`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "attribute":
            _start_distributed(args)    # first: before anything initialises JAX's backend
            return _attribute(args)
        if args.command == "report":
            return report.run_cli(args)
        if args.command == "evaluate":
            return _evaluate(args)
        demo.run(Path(args.out), n=args.n, quick=args.quick, seed=args.seed)
        return 0
    except JobError as e:
        if getattr(args, "traceback", False):
            traceback.print_exc()
        print(f"{PROG} {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted (re-run the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
