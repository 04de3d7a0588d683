"""Read what forgetless does not control with bounded size and depth, and refuse model code.

Three kinds of input come from outside: files a user hands in (configs, study files, checkpoint
JSON), the output of generated code run in the sandbox, and checkpoints from anywhere. None of
them may exhaust memory or the stack, or run code in this process:
- `load_json` parses JSON only when its text is at most `max_bytes` long and nests at most
  `max_depth` brackets (Python's json recursion would otherwise raise RecursionError, which is not
  a ValueError: `'[' * 99999` crashed the caller);
- `load_yaml` is `yaml.safe_load` with a size limit, a limit on the size of the document once its
  aliases are expanded (a 274-byte "billion laughs" file expanded to 95 MB), a depth limit, no
  self-referring anchors and no duplicate keys (PyYAML keeps the last one silently);
- `refuse_custom_code` refuses a checkpoint folder whose config names its own Python classes
  (`auto_map`): transformers would offer to import them. forgetless never does, and passes
  `trust_remote_code=False` to every loader as well.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from forgetless.errors import CorruptCheckpoint, UserError, one_line

MAX_DEPTH = 64  # brackets / nested mappings: far beyond any config or test value we use
YAML_MAX_BYTES = 4 << 20  # a study or config file
YAML_MAX_NODES = 200_000  # expanded nodes (a scalar counts 1 per 64 characters)
CONFIG_JSON_MAX_BYTES = 16 << 20  # config.json / tokenizer_config.json of a checkpoint

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


class UnsafeInput(ValueError):
    """Text refused before parsing: too long or nested too deeply (a ValueError, so callers that
    treat bad JSON as a ValueError treat it the same)."""


class CustomCode(UserError, ValueError):
    """A checkpoint that asks for its own Python code to be imported."""


class YAMLLimit(yaml.YAMLError):
    """A YAML document over a limit (callers' `except yaml.YAMLError` reports it as invalid YAML)."""


def json_depth(text: str) -> int:
    """The deepest bracket nesting of JSON text (brackets inside strings do not count)."""
    depth = peak = 0
    for m in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if m.group() in "[{" else -1
        peak = max(peak, depth)
    return peak


def load_json(text: str | bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """json.loads of text at most `max_bytes` long nesting at most `max_depth` deep; a ValueError
    (json.JSONDecodeError or UnsafeInput) for anything else, never RecursionError or MemoryError."""
    if len(text) > max_bytes:
        raise UnsafeInput(f"{len(text)} bytes, over the limit of {max_bytes}")
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if (depth := json_depth(text)) > max_depth:
        raise UnsafeInput(f"nested {depth} deep, over the limit of {max_depth}")
    try:
        return json.loads(text)
    except (RecursionError, MemoryError) as err:  # the scan above should make this unreachable
        raise UnsafeInput(f"cannot be parsed safely ({type(err).__name__})") from None


# ---------------------------------------------------------------- counts

MAX_TOKENS = 10**15  # a thousand times the largest pretraining runs published
MAX_STEPS = 10**9
MAX_VOCAB = 1 << 20  # the BPE trainer aborts the process (a Rust panic) far above this


def at_most(count: int, field: str, high: int) -> int:
    """`count` when it is in 1..high; a ValueError naming the range otherwise (an integer of
    10^30 tokens was accepted and trained for ever, while 1e30 was refused)."""
    if not 1 <= count <= high:
        raise ValueError(f"{field} must be between 1 and {high:,} ({high:.0e}), got {count:,}")
    return count


# ---------------------------------------------------------------- YAML

class _Loader(yaml.SafeLoader):
    pass


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _line(node: yaml.Node) -> str:
    return f"line {node.start_mark.line + 1}"


def _check_duplicates(node: yaml.MappingNode) -> None:
    seen: dict[str, yaml.Node] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue  # a merge key (<<) may be overridden by the keys beside it: that is its purpose
        if key.value in seen:
            raise YAMLLimit(f"duplicate key {key.value!r} ({_line(seen[key.value])} and {_line(key)}); "
                            "YAML would keep only the last one: remove one of them")
        seen[key.value] = key


def check_yaml_graph(root: yaml.Node, max_nodes: int = YAML_MAX_NODES, max_depth: int = MAX_DEPTH) -> None:
    """Refuse a composed YAML graph whose expansion (every alias copied out, as the constructed
    data is when dumped or validated) is over `max_nodes`, deeper than `max_depth`, refers to
    itself, or has a mapping with a repeated key. Linear in the graph, not in its expansion:
    each node's expanded size is computed once."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        kids = _children(node)
        if done:
            on_path.discard(key)
            own = 1 + len(node.value) // 64 if isinstance(node, yaml.ScalarNode) else 1
            size[key] = own + sum(size[id(c)] for c in kids)
            if size[key] > max_nodes:
                raise YAMLLimit(f"the document expands to more than {max_nodes} nodes once its aliases "
                                f"are copied out (at {_line(node)}): an alias bomb is refused")
            continue
        if key in size:
            continue
        if depth > max_depth:
            raise YAMLLimit(f"nested more than {max_depth} deep ({_line(node)})")
        if isinstance(node, yaml.MappingNode):
            _check_duplicates(node)
        on_path.add(key)
        stack.append((node, depth, True))
        for child in kids:
            if id(child) in on_path:
                raise YAMLLimit(f"an alias refers to a node that contains it ({_line(child)})")
            if id(child) not in size:
                stack.append((child, depth + 1, False))


def load_yaml(text: str, *, max_bytes: int = YAML_MAX_BYTES, max_nodes: int = YAML_MAX_NODES,
              max_depth: int = MAX_DEPTH) -> Any:
    """yaml.safe_load within the limits above; YAMLLimit (a yaml.YAMLError) when over one."""
    if len(text) > max_bytes:
        raise YAMLLimit(f"{len(text)} characters, over the limit of {max_bytes} for a config or study file")
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise YAMLLimit(f"nested more than {max_depth} deep") from None
        if node is None:
            return None
        check_yaml_graph(node, max_nodes, max_depth)
        return loader.construct_document(node)
    finally:
        loader.dispose()


# ---------------------------------------------------------------- model code

_CODE_CONFIGS = ("config.json", "tokenizer_config.json", "adapter_config.json", "processor_config.json",
                 "preprocessor_config.json", "adapter/adapter_config.json")


def refuse_custom_code(folder: str | Path) -> None:
    """CustomCode when a checkpoint folder's config asks transformers to import its own Python
    (`auto_map`); CorruptCheckpoint when one is not JSON within the limits. A folder that does not
    exist (a hub name) passes: its loaders get `trust_remote_code=False`."""
    path = Path(folder)
    if not path.is_dir():
        return
    for name in _CODE_CONFIGS:
        file = path / name
        if not file.is_file():
            continue
        try:
            data = load_json(file.read_bytes(), max_bytes=CONFIG_JSON_MAX_BYTES)
        except (OSError, ValueError) as err:
            raise CorruptCheckpoint(f"{file} is truncated or corrupt ({one_line(err)}); restore it or save "
                                    "the model again") from None
        if isinstance(data, dict) and data.get("auto_map"):
            raise CustomCode(f"{file} names its own model code (auto_map: {_names(data['auto_map'])}); "
                             "forgetless never imports code from a checkpoint: convert it to a built-in "
                             "transformers architecture, or remove auto_map if the built-in class fits")


def _names(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."
