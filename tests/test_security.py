"""Nothing a spec, a checkpoint or a cache file holds runs as code (docs/security.md): names are
plain identifiers by construction, every user string in generated code is a literal, a checkpoint
never chooses the code that builds it and is verified before use, and compiled or generated files
in the cache are private, checked and rebuilt rather than trusted."""
from __future__ import annotations

import ast
import importlib
import json
import os
import stat
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import arspec
from arspec.checkpoint import CheckpointError, digest, read_checkpoint
from arspec.cli.main import main
from tests.helpers import problems_of

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = "__import__('pathlib').Path({marker!r}).write_text('ran')"
TINY = """\
name: {name}
description: {description}
event: {{shape: [1, 3, 3]}}
distribution: {{type: bernoulli}}
graph:
  h1:  {{op: masked_linear, inputs: [x], features: 6, activation: relu}}
  out: {{op: masked_linear, features: output}}
"""


def tiny(name: str = "tiny", description: str = "a small MADE") -> str:
    return TINY.format(name=json.dumps(name), description=json.dumps(description))


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


# -- names: plain ASCII identifiers, checked at load time -----------------------------------------

HOSTILE_NAMES = ["tiny\n__import__('os').system('id')\n#", "a²", "ﬁ", "9lives", "has space", "x'y", "", "a" * 65]


@pytest.mark.parametrize("bad", HOSTILE_NAMES)
@pytest.mark.parametrize("where", ["graph", "conditioning", "params", "blocks"])
def test_every_name_a_spec_gives_is_a_plain_ascii_identifier(where, bad):
    text = tiny()
    if where == "graph":
        text = text.replace("  h1: ", f"  {json.dumps(bad)}: ")
    elif where == "conditioning":
        text += f"conditioning: {{{json.dumps(bad)}: {{type: global, classes: 2}}}}\n"
    elif where == "params":
        text += f"params: {{{json.dumps(bad)}: 3}}\n"
    else:
        text += f"blocks: {{{json.dumps(bad)}: {{graph: {{a: {{op: relu, inputs: [in]}}}}}}}}\n"
    problems = problems_of(text)
    assert len(problems) >= 1 and any(f"{where}." in p and ("identifier" in p or "characters" in p or "is empty" in p) for p in problems), problems
    assert all("\n" not in p for p in problems)                       # one line each, whatever the name holds


def test_the_spec_name_and_nfkc_twins_are_refused(tmp_path, capsys):
    assert any("is not a plain ASCII name" in p for p in problems_of(tiny(name=HOSTILE_NAMES[0])))
    twins = tiny().replace("  h1: ", '  "ﬁ": ').replace("  out: ", "  fi: ")      # Python folds ﬁ into fi
    assert any("graph.ﬁ" in p for p in problems_of(twins))
    path = tmp_path / "evil.yaml"
    path.write_text(tiny(name=HOSTILE_NAMES[0]))
    code, out, _ = cli(capsys, "check", str(path))
    assert code == 2 and "evil.yaml:1:1: name:" in out


def test_conditioning_cannot_take_the_name_of_a_method_argument():
    text = tiny() + "conditioning: {n: {type: global, classes: 2}}\n"
    assert any("conditioning.n: 'n' is an argument of the model's methods" in p for p in problems_of(text))


# -- generated code: user text only in literals -----------------------------------------------------

def _shape(source: str) -> str:
    """The module's syntax tree with every string constant blanked: what would run."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = ""
    return ast.dump(tree)


def _export(tmp_path: Path, text: str, filename: str, overrides: tuple[str, ...] = ()) -> str:
    path = tmp_path / filename
    path.write_text(text)
    return arspec.export(arspec.load_spec(path, overrides=list(overrides)))


def test_hostile_descriptions_paths_and_overrides_reach_generated_code_only_as_literals(tmp_path, monkeypatch):
    from arspec_torch_codegen.load import import_source
    monkeypatch.setenv("ARSPEC_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "ran"
    payload = PAYLOAD.format(marker=str(marker))
    benign = _export(tmp_path, tiny(), "plain.yaml", ("description=plain",))
    hostile_texts = [f'x"""\n{payload}\n"""', "ends with a backslash \\", f"x''' + {payload} + '''", "line\r\n" + payload]
    for i, description in enumerate(hostile_texts):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        source = _export(folder, tiny(description=description), 'we"""ird\n__import__("sys").exit(7)\\.yaml',
                         (f"description={json.dumps(description)}",))
        assert _shape(source) == _shape(benign), description          # the same statements, only the strings differ
        assert '__import__("sys").exit(7)' in ast.get_docstring(ast.parse(source))     # the path, as text
        module = import_source(source, f"hostile_{i}")                 # defining the module runs nothing of the text
        assert not marker.exists()
        assert " ".join(description.split()) in module.Model.__doc__       # the description, on one line


def test_the_emitter_refuses_a_name_that_is_not_an_identifier():
    emitter = importlib.import_module("arspec_torch_codegen.emit")
    spec = arspec.parse_spec(tiny())
    node = spec.ir.op_nodes()[0]
    node.ident = "h1;import os"
    with pytest.raises(ValueError, match="not a plain ASCII identifier"):
        emitter.emit(spec.ir)
    assert emitter.comment("a\nb\rc\\") == "a\\nb\\rc\\\\" and emitter.string_literal('"""x') == repr('"""x')


def test_a_planted_generated_module_is_replaced_never_imported(tmp_path, monkeypatch):
    from arspec_torch_codegen.emit import emit
    from arspec_torch_codegen.load import import_source, source_folder
    monkeypatch.setenv("ARSPEC_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "ran"
    source = emit(arspec.parse_spec(tiny()).ir)
    first = import_source(source, "tiny")
    path = Path(first.__file__)
    path.write_text(PAYLOAD.format(marker=str(marker)) + "\n")      # another user plants code under the same name
    again = import_source(source, "tiny")
    assert not marker.exists() and path.read_text() == source and hasattr(again, "Model")
    path.unlink()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    path.symlink_to(victim)                                        # a link planted where the file goes
    import_source(source, "tiny")
    assert victim.read_text() == "keep me" and not path.is_symlink()
    assert stat.S_IMODE(os.stat(source_folder()).st_mode) == 0o700


def test_the_cache_folder_must_be_this_users_own(tmp_path, monkeypatch):
    from arspec_torch.ccache import CacheError, private_dir
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    assert stat.S_IMODE(os.stat(private_dir(shared)).st_mode) == 0o700    # ours: made private
    link = tmp_path / "link"
    link.symlink_to(shared)
    with pytest.raises(CacheError, match="not a folder"):
        private_dir(link)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(shared).st_uid + 1)
    with pytest.raises(CacheError, match="owned by another user"):
        private_dir(shared)


# -- compiled C libraries: keyed, verified, rebuilt ------------------------------------------------

def _library(tmp_path, monkeypatch, tag: str):
    from arspec_torch import ccache
    if ccache.compiler() is None:
        pytest.skip("no C compiler here")
    monkeypatch.setenv("ARSPEC_CACHE", str(tmp_path))
    source = f"int answer_{tag}(void) {{ return 42; }}\n"
    flags = ("-O1", "-shared", "-fPIC")

    def load() -> int:
        ccache.load_library.cache_clear()
        lib = ccache.load_library(source, flags, prefix=tag)
        return getattr(lib, f"answer_{tag}")()
    path = ccache.private_dir(tmp_path / "cstep") / f"{tag}_{ccache.library_key(source, flags)}.so"
    ccache.build_library(source, flags, path)             # built (as an earlier run would have), not loaded here
    return load, path


@pytest.mark.parametrize("damage", ["truncated", "empty", "record"])
def test_a_damaged_cached_library_is_rebuilt_not_loaded(tmp_path, monkeypatch, damage):
    load, path = _library(tmp_path, monkeypatch, damage)
    built = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(built[: len(built) // 3])       # loaded as it is, this dies of SIGBUS
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.with_suffix(".json").write_text("{not json")
    assert load() == 42
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["size"] == len(path.read_bytes()) > 0


def test_a_library_is_keyed_by_compiler_flags_and_cpu(monkeypatch):
    from arspec_torch import ccache
    key = ccache.library_key("int f(void);", ("-O3",))
    assert ccache.library_key("int f(void);", ("-O2",)) != key
    monkeypatch.setattr(ccache, "cpu_identity", lambda: "another CPU without AVX-512")
    assert ccache.library_key("int f(void);", ("-O3",)) != key      # -march=native for another CPU: SIGILL
    monkeypatch.setattr(ccache, "compiler_identity", lambda name: "another compiler")
    assert ccache.library_key("int f(void);", ("-O3",)) != key


# -- checkpoints: data, never code; verified -------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "specs/made.yaml", "--set", "params.hidden=12", "--data", "binarized-mnist-5k", "--limit", "64",
                 "--batch-size", "32", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    return out


def _rewrite(source: Path, target: Path, tensors=None, **metadata: str) -> Path:
    """A copy of a checkpoint with some metadata changed and a valid digest (a forger can compute one)."""
    old_tensors, meta = read_checkpoint(source)
    tensors = old_tensors if tensors is None else tensors
    meta = {**meta, **metadata}
    meta["digest"] = digest(tensors, meta)
    save_file(tensors, str(target), metadata=meta)
    return target


def test_a_checkpoint_never_chooses_the_backend_that_builds_it(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARSPEC_CACHE", str(tmp_path / "cache"))
    forged = _rewrite(run_dir / "best.safetensors", tmp_path / "forged.safetensors", backend="torch-codegen")
    code, out, err = cli(capsys, "sample", str(forged), "-n", "2", "-o", str(tmp_path / "s.npy"))
    assert code == 0, err
    assert not (tmp_path / "cache" / "codegen").exists()          # no code was generated, nothing imported
    assert not hasattr(arspec.load_model(forged), "generated_source")


def test_a_spec_with_python_tags_inside_a_checkpoint_is_refused(run_dir, tmp_path, capsys):
    marker = tmp_path / "ran"
    spec = f"!!python/object/apply:os.system ['touch {marker}']\n"
    forged = _rewrite(run_dir / "best.safetensors", tmp_path / "tagged.safetensors", spec=spec)
    code, _, err = cli(capsys, "eval", str(forged), "--limit", "4")
    assert code == 2 and "its spec does not load" in err and "tagged.safetensors" in err and not marker.exists()


@pytest.mark.parametrize("where", ["weights", "metadata"])
def test_a_flipped_byte_is_caught_on_load(run_dir, tmp_path, capsys, where):
    data = bytearray((run_dir / "best.safetensors").read_bytes())
    header = int.from_bytes(data[:8], "little")
    index = 8 + header + 100 if where == "weights" else data.index(b"relu")
    data[index] ^= 0x01 if where == "weights" else 0x20                  # relu -> Relu in the spec
    broken = tmp_path / "flipped.safetensors"
    broken.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="flipped.safetensors: damaged: its contents do not match the digest"):
        arspec.load_model(broken)
    code, out, err = cli(capsys, "eval", str(broken), "--limit", "4")
    assert code == 2 and err.count("\n") == 1 and "nats" not in out


def test_the_best_checkpoint_holds_no_optimizer_state(run_dir):
    def names(path: Path) -> set[str]:
        with safe_open(str(path), framework="pt") as f:
            return set(f.keys())
    assert not any(k.startswith("optimizer.") for k in names(run_dir / "best.safetensors"))
    assert any(k.startswith("optimizer.") for k in names(run_dir / "last.safetensors"))
    best, last = (run_dir / "best.safetensors").stat().st_size, (run_dir / "last.safetensors").stat().st_size
    assert best * 2 < last


def test_bad_metadata_and_another_specs_weights_are_named(run_dir, tmp_path):
    bad_meta = _rewrite(run_dir / "best.safetensors", tmp_path / "meta.safetensors", meta="{not json")
    with pytest.raises(CheckpointError, match="its metadata entry 'meta' is not valid JSON"):
        arspec.load_model(bad_meta)
    tensors = load_file(run_dir / "best.safetensors")
    other = arspec.compile(arspec.load_spec(ROOT / "specs" / "made.yaml", overrides=["params.hidden=20"]))
    tensors = {k: v for k, v in tensors.items() if not k.startswith("model.")}
    tensors.update({f"model.{k}": v for k, v in other.state_dict().items()})
    foreign = _rewrite(run_dir / "best.safetensors", tmp_path / "foreign.safetensors", tensors=tensors)
    with pytest.raises(CheckpointError, match=r"the weights do not fit its spec: h1__.* is \(20, 784\) in the checkpoint but \(12, 784\)"):
        arspec.load_model(foreign)


def test_checkpoints_are_written_with_fsync_and_leave_no_temporary_files(run_dir):
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))
    tensors, meta = read_checkpoint(run_dir / "last.safetensors")
    assert meta["digest"] == digest(tensors, meta)
