"""Forgetting and learning as benchmark accuracy, through lm-evaluation-harness (optional extra).

    scores = harness_scores(model, tokenizer, ["hellaswag", "arc_challenge", "winogrande"])
    point = harness_point(model, tokenizer, ["hellaswag", "arc_challenge", "winogrande"], ["gsm8k"])
    # {"forgetting_accuracy": mean of the three, "learning_accuracy": gsm8k's, "harness": {...}}

The paper's Llama-2-7B runs (following Biderman et al., 2024) measure forgetting as the average
accuracy over general benchmarks the base model was already good at, and learning as accuracy on
the finetuning domain (GSM8K-style math): for a finetune checkpoint theta,

    forgetting_accuracy(theta) = (1/|F|) * sum_{t in F} score_t(theta)
    learning_accuracy(theta)   = (1/|L|) * sum_{t in L} score_t(theta)

both higher-is-better, unlike the loss-based `forgetting`/`learning` of `forgetless finetune`.

score_t is the task's headline metric: the first of `acc`, `acc_norm`, `exact_match` that the
task reports, in that order of preference (lm-eval always reports acc before acc_norm for multiple
choice, whatever order the YAML lists them in); a metric reported under several filters gives its
first filter (GSM8K: exact_match under strict-match). `metric=` overrides the rule, for all tasks
("acc_norm") or per task ({"hellaswag": "acc_norm", "gsm8k": "exact_match,flexible-extract"}).
For multiple choice, acc is the share of questions whose choice with the highest summed
log-likelihood, log p(" " + choice | prompt), is the target; acc_norm divides each log-likelihood
by the choice's length in characters first.

Tasks are looked up by a `TaskManager`, which also reads user YAML tasks from `include_path`, so a
benchmark over local files (`dataset_path: json`, `dataset_kwargs: {data_files: ...}`) runs with
no network. Built-in tasks load their data from the Hugging Face hub (or its local cache).
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Sequence

from forgetless.integrations.callback import TrackedCallback

HEADLINE_METRICS = ("acc", "acc_norm", "exact_match")
# Shown as examples when a task name is unknown: common general-knowledge and math benchmarks.
WELL_KNOWN = ("hellaswag", "arc_challenge", "arc_easy", "winogrande", "mmlu", "gsm8k")
INSTALL_HINT = 'pip install "forgetless[harness]"'


def _lm_eval():
    """Import lm_eval lazily, so the rest of forgetless works without the extra."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise ImportError("lm-evaluation-harness (lm_eval) is not installed; benchmark-based "
                          f"forgetting needs it: {INSTALL_HINT}") from e
    return lm_eval, HFLM, TaskManager


@functools.lru_cache(maxsize=8)
def _task_manager(include_path: tuple[str, ...], include_defaults: bool):
    # Indexing the ~15k built-in task YAMLs takes seconds; a callback re-evaluating every N steps
    # should pay that once per process.
    _, _, TaskManager = _lm_eval()
    return TaskManager(include_path=list(include_path) or None, include_defaults=include_defaults)


def _include_paths(include_path) -> tuple[str, ...]:
    if include_path is None:
        return ()
    paths = [include_path] if isinstance(include_path, (str, os.PathLike)) else list(include_path)
    out = []
    for p in paths:
        p = os.path.abspath(os.fspath(p))
        if not os.path.isdir(p):
            raise ValueError(f"include_path: {p!r} is not a directory (it should hold task YAML files)")
        out.append(p)
    return tuple(out)


def resolve_tasks(tasks: Sequence[str], include_path=None):
    """Check the task names and return a TaskManager that knows them all.

    When every name is a local task under include_path, only those YAMLs are indexed (fast, and
    nothing built-in is touched); otherwise the built-in index is added.
    """
    if isinstance(tasks, str) or not tasks or not all(isinstance(t, str) and t for t in tasks):
        raise ValueError(f"tasks: expected a non-empty list of task names, got {tasks!r}")
    paths = _include_paths(include_path)
    if paths:
        local = _task_manager(paths, False)
        if all(t in local.all_tasks for t in tasks):
            return local
    tm = _task_manager(paths, True)
    unknown = [t for t in tasks if t not in tm.all_tasks]
    if unknown:
        known = tm.all_tasks
        examples = [t for t in WELL_KNOWN if t in known] or list(known[:6])
        hints = []
        for t in unknown:
            close = difflib.get_close_matches(t, known, n=5, cutoff=0.6)
            hints.append(f"{t!r} (close: {', '.join(close)})" if close else repr(t))
        local = sorted(_task_manager(paths, False).all_tasks) if paths else []
        raise ValueError(
            f"tasks: unknown task name(s) {', '.join(hints)}. "
            f"{len(known)} tasks are available, e.g. {', '.join(examples)}, ..."
            + (f"; local tasks under include_path: {', '.join(local) or 'none'}" if paths
               else "; for a task of your own, pass include_path=<folder with its YAML>"))
    # Older lm_eval versions have no tag/group listing; then a tag fails later, at its result.
    tag_names, group_names = getattr(tm, "all_tags", []), getattr(tm, "all_groups", [])
    tags = [t for t in tasks if t in tag_names and t not in group_names]
    if tags:
        raise ValueError(f"tasks: {', '.join(map(repr, tags))} is a tag (a set of tasks with no "
                         "aggregate score); list its tasks by name instead")
    return tm


def headline(task: str, metrics: dict, metric: str | None = None) -> float:
    """The task's headline score from its result dict (rule in the module docstring).

    `metric` picks one instead: "name" (its first filter) or "name,filter" (exactly that key).
    """
    def numeric(key):
        return isinstance(metrics[key], (int, float)) and not isinstance(metrics[key], bool)
    reported = [k for k in metrics if "," in k and "_stderr" not in k and numeric(k)]
    wanted = [metric] if metric is not None else HEADLINE_METRICS
    for name in wanted:
        for key in reported:
            if key == name or key.split(",")[0] == name:
                return float(metrics[key])
    raise ValueError(f"metric: task {task!r} reports no {' / '.join(wanted)}; "
                     f"it reports {', '.join(reported) or 'nothing'}")


def _is_offline_error(e: BaseException) -> bool:
    """Whether an exception (or one it came from) is the hub being unreachable or offline."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = f"{type(e).__name__}: {e}".lower()
        if any(s in text for s in ("offline", "connectionerror", "couldn't reach", "could not reach",
                                   "localentrynotfound", "max retries exceeded",
                                   "failed to resolve", "name resolution")):
            return True
        e = e.__cause__ or e.__context__
    return False


def harness_scores(model, tokenizer, tasks: list[str], *, include_path=None, limit=None,
                   batch_size: int = 8, num_fewshot: int | None = None, device=None,
                   metric: str | dict[str, str] | None = None) -> dict[str, float]:
    """Evaluate an in-memory Hugging Face causal LM on lm-evaluation-harness tasks.

    Returns {task: headline score in [0, 1]} in the order given. `limit` caps the documents per
    task (an int, or a fraction < 1); `device`, when given, moves the model there first;
    `metric` overrides the headline rule (one name for all tasks, or {task: name}). The
    model's train/eval mode is restored afterwards, so this is safe in the middle of training.
    """
    lm_eval, HFLM, _ = _lm_eval()
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if limit is not None and not (isinstance(limit, (int, float)) and limit > 0):
        raise ValueError(f"limit must be None, an int >= 1 or a fraction in (0, 1), got {limit!r}")
    tm = resolve_tasks(tasks, include_path)
    tasks = list(dict.fromkeys(tasks))  # a task named twice is evaluated once
    if isinstance(metric, dict) and set(metric) - set(tasks):
        raise ValueError(f"metric: {sorted(set(metric) - set(tasks))} are not among tasks {tasks}")
    per_task = metric if isinstance(metric, dict) else dict.fromkeys(tasks, metric)
    if device is not None:
        model.to(device)
    was_training = model.training
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)  # sets eval mode
        out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=tm, limit=limit,
                                      num_fewshot=num_fewshot, log_samples=False,
                                      bootstrap_iters=0, verbosity="WARNING")
    except Exception as e:
        if _is_offline_error(e):
            raise RuntimeError(
                f"tasks {tasks}: a task's dataset could not be fetched from the Hugging Face hub "
                f"({type(e).__name__}: {e}). Offline, use a task over local files: write its YAML "
                "with dataset_path: json and dataset_kwargs: {data_files: {test: <file>}} in a "
                "folder and pass include_path=<folder>, or pre-populate the datasets cache.") from e
        raise
    finally:
        model.train(was_training)
    results = {**out.get("groups", {}), **out["results"]}
    scores = {}
    for t in tasks:
        if t not in results:
            raise ValueError(f"task {t!r} produced no result (evaluated: {sorted(results)})")
        scores[t] = headline(t, results[t], per_task.get(t))
    return scores


def _point(scores: dict[str, float], forgetting_tasks, learning_tasks) -> dict:
    def mean(ts):
        return sum(scores[t] for t in ts) / len(ts) if ts else None
    return {"forgetting_accuracy": mean(forgetting_tasks), "learning_accuracy": mean(learning_tasks),
            "harness": scores}


def _task_lists(forgetting_tasks, learning_tasks) -> tuple[list[str], list[str]]:
    out = []
    for name, ts in (("forgetting_tasks", forgetting_tasks), ("learning_tasks", learning_tasks)):
        if isinstance(ts, str) or ts is None:
            raise ValueError(f"{name}: expected a list of task names, got {ts!r}")
        out.append(list(ts))
    if not out[0] and not out[1]:
        raise ValueError("forgetting_tasks, learning_tasks: both are empty; give at least one task")
    return out[0], out[1]


def harness_point(model, tokenizer, forgetting_tasks: list[str], learning_tasks: list[str],
                  **kw) -> dict:
    """One eval point of a finetune, measured as benchmark accuracy (higher is better).

    {"forgetting_accuracy": mean score over forgetting_tasks, "learning_accuracy": mean over
    learning_tasks, "harness": {task: score}}; a mean over an empty list is None. All tasks run
    in one harness call; keyword arguments go to `harness_scores`.
    """
    forgetting_tasks, learning_tasks = _task_lists(forgetting_tasks, learning_tasks)
    scores = harness_scores(model, tokenizer, forgetting_tasks + learning_tasks, **kw)
    return _point(scores, forgetting_tasks, learning_tasks)


def harness_measure(tasks: list[str], limit: int | None = None, include_path=None, batch_size: int = 8):
    """`forgetless finetune --harness TASK`: a (model, tokenizer) -> harness_point function with
    `tasks` as forgetting tasks, for finetune(cfg, harness=...). lm_eval and the task names are
    checked now, before any training (ImportError naming the extra to install; ValueError naming
    an unknown task)."""
    tasks = list(tasks)
    resolve_tasks(tasks, include_path)

    def measure(model, tokenizer) -> dict:
        return harness_point(model, tokenizer, tasks, [], include_path=include_path, limit=limit,
                             batch_size=batch_size)

    return measure


class HarnessCallback(TrackedCallback):
    """Benchmark accuracy inside any Hugging Face `Trainer` run: at the start (the base model),
    then every `every` steps, or with `every=None` whenever the Trainer evaluates (`on_evaluate`).

    The counterpart of `ForgettingCallback` for real models: each measurement is a
    `harness_point`, kept in `history` as {"step", "forgetting_accuracy", "learning_accuracy",
    "harness"} and logged as its own Trainer log record at its step: `eval_forgetting_accuracy`,
    `eval_learning_accuracy` and `eval_harness_<task>`, which trackers show as
    `eval/forgetting_accuracy`, ... beside `eval/loss`. As for ForgettingCallback, `attach(trainer)`
    (or ForgetlessTrainerMixin) is what sends the record to the report_to trackers: the Trainer's
    reporting callbacks have written a step's log line before any user callback sees it.
    Keyword arguments (include_path, limit, batch_size, num_fewshot, metric) go to
    `harness_scores`; a small `limit` keeps each measurement short.
    """

    def __init__(self, forgetting_tasks: list[str], learning_tasks: list[str] = (),
                 tokenizer=None, every: int | None = 500, **harness_kw):
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ValueError(f"every must be an integer >= 1 or None (with each evaluation), got {every!r}")
        self.forgetting_tasks, self.learning_tasks = _task_lists(forgetting_tasks, learning_tasks)
        self.tokenizer, self.every, self.harness_kw = tokenizer, every, harness_kw
        self.history: list[dict] = []
        self._tokenizer_seen = None  # the Trainer's processing_class, seen at on_train_begin

    def _measure(self, model, step: int) -> dict[str, float]:
        """The log record of one measurement (the point itself goes to `history`)."""
        tok = self.tokenizer or self._tokenizer_seen
        if tok is None:
            raise ValueError("tokenizer: HarnessCallback needs a tokenizer (pass one, or give the "
                             "Trainer processing_class=tokenizer)")
        point = harness_point(model, getattr(tok, "tokenizer", tok), self.forgetting_tasks,
                              self.learning_tasks, **self.harness_kw)
        self.history.append({"step": step, **point})
        logs = {f"eval_{key}": point[key] for key in ("forgetting_accuracy", "learning_accuracy")
                if point[key] is not None}
        logs.update({f"eval_harness_{t}": v for t, v in point["harness"].items()})
        return logs

    def _due(self, step: int) -> bool:  # once per step, even if a step both ends and evaluates
        return not self.history or self.history[-1]["step"] != step

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        self._tokenizer_seen = processing_class or kwargs.get("tokenizer")
        resumed = any("eval_forgetting_accuracy" in r or "eval_learning_accuracy" in r
                      for r in state.log_history)  # the base point is in the checkpoint already
        if not self.history and not resumed:
            self._emit(args, state, control, self._measure(model, state.global_step))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0 and self._due(state.global_step):
            self._emit(args, state, control, self._measure(model, state.global_step))

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        # Trainer.evaluate has logged eval_loss already; this record follows it at the same step.
        if self.every is None and self._due(state.global_step):
            self._emit(args, state, control, self._measure(model, state.global_step))
