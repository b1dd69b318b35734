"""bcc compiling on kernels newer than its headers, pure: detection, definitions, the retry."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from skbpath.tracer.record.bpf import compile as bcc_compile
from skbpath.tracer.record.bpf.compile import (
    CompileError,
    btf_definition,
    cached_types,
    compile_bpf,
    default_cache,
    find_definitions,
    first_error,
    missing_types,
    uapi_definition,
)

# What bcc 0.26 printed compiling probes/skbpath.bpf.c against 6.12.117's headers (abridged).
LOG_612 = """\
In file included from /virtual/main.c:41:
In file included from include/linux/skbuff.h:28:
include/linux/bpf.h:368:10: error: invalid application of 'sizeof' to an incomplete type 'struct bpf_wq'
                return sizeof(struct bpf_wq);
                       ^     ~~~~~~~~~~~~~~~
include/linux/bpf.h:378:10: error: invalid application of 'sizeof' to an incomplete type 'struct bpf_rb_root'
include/linux/bpf.h:380:10: error: invalid application of 'sizeof' to an incomplete type 'struct bpf_rb_node'
include/linux/bpf.h:382:10: error: invalid application of 'sizeof' to an incomplete type 'struct bpf_refcount'
include/linux/bpf.h:397:10: error: invalid application of '__alignof' to an incomplete type 'struct bpf_wq'
include/linux/bpf.h:320:25: note: forward declaration of 'struct bpf_timer' is 'struct bpf_timer'
6 warnings and 8 errors generated.
"""  # noqa: E501 (compiler lines as printed)
# The uapi header's definitions, as 6.12's include/uapi/linux/bpf.h writes them.
UAPI = """\
struct bpf_timer {
\t__u64 __opaque[2];
} __attribute__((aligned(8)));

struct bpf_wq {
\t__u64 __opaque[2];
} __attribute__((aligned(8)));

struct bpf_rb_root {
\t__u64 __opaque[2];
} __attribute__((aligned(8)));

struct bpf_refcount {
\t__u32 __opaque[1];
} __attribute__((aligned(4)));
"""


class FakeBtf:
    """Struct sizes, as the kernel's BTF would give them."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes

    def struct_size(self, name: str) -> int | None:
        return self.sizes.get(name)


def test_missing_types_come_from_the_errors_in_order() -> None:
    assert missing_types(LOG_612) == ["bpf_wq", "bpf_rb_root", "bpf_rb_node", "bpf_refcount"]
    # Notes and warnings name types too, but only errors count.
    assert missing_types("x.h:1:2: note: forward declaration of 'struct bpf_timer'\n") == []
    assert missing_types("x.h:3:4: error: field has incomplete type 'struct bpf_task_work'\n") \
        == ["bpf_task_work"]


def test_first_error_names_the_header_and_line() -> None:
    assert first_error(LOG_612) == (
        "include/linux/bpf.h",
        "include/linux/bpf.h:368: error: invalid application of 'sizeof' to an incomplete "
        "type 'struct bpf_wq'",
    )
    assert first_error("6 warnings generated.\n") is None


def test_uapi_definition_is_the_header_text() -> None:
    assert uapi_definition(UAPI, "bpf_wq") == (
        "struct bpf_wq {\n\t__u64 __opaque[2];\n} __attribute__((aligned(8)));")
    assert uapi_definition(UAPI, "bpf_refcount") == (
        "struct bpf_refcount {\n\t__u32 __opaque[1];\n} __attribute__((aligned(4)));")
    assert uapi_definition(UAPI, "bpf_rb_node") is None
    # A prefix of another name is not that name.
    assert uapi_definition(UAPI, "bpf_rb") is None


@pytest.mark.parametrize(("size", "want"), [
    (16, "__u64 __opaque[2];\n} __attribute__((aligned(8)));"),
    (32, "__u64 __opaque[4];\n} __attribute__((aligned(8)));"),
    (4, "__u32 __opaque[1];\n} __attribute__((aligned(4)));"),
    (6, "__u16 __opaque[3];\n} __attribute__((aligned(2)));"),
])
def test_btf_definition_is_opaque_words_of_the_size(size: int, want: str) -> None:
    assert btf_definition("bpf_x", size) == "struct bpf_x {\n\t" + want


def test_definitions_from_the_uapi_header_then_btf(tmp_path: Path) -> None:
    uapi = tmp_path / "source" / "include" / "uapi" / "linux"
    uapi.mkdir(parents=True)
    (uapi / "bpf.h").write_text(UAPI)
    btf_loads: list[int] = []

    def btf() -> Any:
        btf_loads.append(1)
        return FakeBtf({"bpf_rb_node": 32, "bpf_wq": 99})

    found = find_definitions(["bpf_wq", "bpf_rb_node", "bpf_nothing"],
                             [str(tmp_path / "build"), str(tmp_path / "source")], btf)
    assert found.text["bpf_wq"].endswith("aligned(8)));")  # the header wins over BTF
    assert found.origin["bpf_wq"] == str(uapi / "bpf.h")
    assert found.text["bpf_rb_node"] == btf_definition("bpf_rb_node", 32)
    assert found.origin["bpf_rb_node"] == "the kernel's BTF"
    assert "bpf_nothing" not in found.text
    assert btf_loads == [1]
    # Everything in the header: BTF is not even loaded.
    find_definitions(["bpf_wq"], [str(tmp_path / "source")], btf)
    assert btf_loads == [1]


class FakeBpf:
    """Stands in for bcc's BPF: 'compiles' if the text defines what the 'headers' need."""

    needs = ("bpf_wq", "bpf_rb_root")
    calls: list[dict[str, Any]] = []

    def __init__(self, src_file: bytes | None = None, text: bytes | None = None,
                 cflags: list[str] | None = None) -> None:
        FakeBpf.calls.append({"src_file": src_file, "text": text})
        source = (text or b"").decode()
        missing = [n for n in self.needs if f"struct {n} {{" not in source]
        if missing:
            for n in missing:
                # clang's diagnostics come from C++, on file descriptor 2.
                os.write(2, f"include/linux/bpf.h:1:2: error: invalid application of 'sizeof' "
                            f"to an incomplete type 'struct {n}'\n".encode())
            raise Exception("Failed to compile BPF module b'skbpath.bpf.c'")


def _setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uapi: str) -> Path:
    src = tmp_path / "skbpath.bpf.c"
    src.write_text("int main;\n")
    inc = tmp_path / "headers" / "include" / "uapi" / "linux"
    inc.mkdir(parents=True)
    (inc / "bpf.h").write_text(uapi)
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path / "headers"))
    FakeBpf.calls = []
    return src


def test_compile_retries_with_the_missing_types_defined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _setup(tmp_path, monkeypatch, UAPI)
    notes: list[str] = []
    bpf = compile_bpf(FakeBpf, str(src), [], "6.12.117+deb12-amd64", lambda: None,
                      str(tmp_path / "log"), notes.append)
    assert isinstance(bpf, FakeBpf)
    assert FakeBpf.calls[0]["src_file"] == str(src).encode()  # first as it is
    text = FakeBpf.calls[1]["text"].decode()
    assert text.index("struct bpf_wq {") < text.index(f'#line 1 "{src}"') < text.index("int main")
    assert notes == [f"skbpath: bcc's headers lack struct bpf_wq, bpf_rb_root: defined from "
                     f"{tmp_path / 'headers' / 'include' / 'uapi' / 'linux' / 'bpf.h'}"]
    assert not (tmp_path / "log").exists()


def test_compile_that_still_fails_is_one_line_and_a_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The header defines bpf_wq but not bpf_rb_root, and there is no BTF.
    src = _setup(tmp_path, monkeypatch, UAPI.replace("bpf_rb_root", "bpf_other"))
    with pytest.raises(CompileError) as exc:
        compile_bpf(FakeBpf, str(src), [], "6.12.117+deb12-amd64", lambda: None,
                    str(tmp_path / "log"))
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith("bcc could not compile the BPF program against 6.12.117+deb12-amd64's "
                          f"headers ({tmp_path / 'headers'}), in include/linux/bpf.h: ")
    # The first error of the last round: what defining bpf_wq did not fix.
    assert "incomplete type 'struct bpf_rb_root'; defined bpf_wq and still failed" in msg
    assert msg.endswith(f"(full log: {tmp_path / 'log'})")
    log = (tmp_path / "log").read_text()
    assert "struct bpf_wq {" in log and log.count("incomplete type 'struct bpf_rb_root'") == 2
    assert len(FakeBpf.calls) == 2


def test_a_failure_without_compiler_errors_still_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _setup(tmp_path, monkeypatch, UAPI)

    def broken(**_kw: Any) -> Any:
        raise Exception("could not open bpf map: events")

    with pytest.raises(CompileError, match=r"for 6\.12: could not open bpf map: events \(full"):
        compile_bpf(broken, str(src), [], "6.12", lambda: None, str(tmp_path / "log"))
    assert bcc_compile.MAX_ROUNDS >= 2


def test_the_types_a_kernel_needed_are_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _setup(tmp_path, monkeypatch, UAPI)
    cache = tmp_path / "cache"
    compile_bpf(FakeBpf, str(src), [], "6.12", lambda: None, str(tmp_path / "log"),
                cache=str(cache))
    assert cache.read_text().split() == ["bpf_wq", "bpf_rb_root"]
    assert len(FakeBpf.calls) == 2
    # The next compile on this kernel defines them from the start: one compile.
    FakeBpf.calls = []
    compile_bpf(FakeBpf, str(src), [], "6.12", lambda: None, str(tmp_path / "log"),
                cache=str(cache))
    assert len(FakeBpf.calls) == 1 and b"struct bpf_wq {" in FakeBpf.calls[0]["text"]


def test_a_stale_cache_is_no_worse_than_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _setup(tmp_path, monkeypatch, UAPI)
    cache = tmp_path / "cache"
    cache.write_text("bpf_timer\nnot-a-name;\n")
    compile_bpf(FakeBpf, str(src), [], "6.12", lambda: None, str(tmp_path / "log"),
                cache=str(cache))
    # bpf_timer alone did not do: started over, and remembered what was needed.
    assert len(FakeBpf.calls) == 1 + 2
    assert FakeBpf.calls[1]["src_file"] is not None
    assert cache.read_text().split() == ["bpf_wq", "bpf_rb_root"]
    assert cached_types(str(tmp_path / "missing")) == []


def test_the_cache_lives_in_a_private_directory(tmp_path: Path) -> None:
    private = tmp_path / "run"
    assert default_cache("6.12", str(private)) == str(private / "bcc-missing-types-6.12")
    assert private.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    assert default_cache("6.12", str(shared)) is None


def test_headers_are_where_bcc_looks() -> None:
    assert bcc_compile.header_dirs("6.12.117+deb12-amd64", {}) == [
        "/lib/modules/6.12.117+deb12-amd64/build", "/lib/modules/6.12.117+deb12-amd64/source"]
    assert bcc_compile.header_dirs("x", {"BCC_KERNEL_SOURCE": "/src"}) == ["/src"]


def test_auto_falls_back_when_the_program_does_not_compile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from click.testing import CliRunner
    from skbpath.tracer.cli import main as cli
    from skbpath.tracer.cli import record as cli_record

    ran: list[str] = []

    def bpf(kernel: Any, btf: Any, mode: str, *args: Any) -> None:
        ran.append(mode)
        raise CompileError(f"bcc could not compile ({mode})")

    out = tmp_path / "t.skbtrace"
    out.write_bytes(b"")  # what the failed compile left behind
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("skbpath.tracer.kernel.info.read_kernel_info", lambda: "kernel")
    # Every mode may run here: only the compile fails.
    monkeypatch.setattr("skbpath.tracer.record.attach.machine_features", lambda k: "features")
    monkeypatch.setattr("skbpath.tracer.record.attach.require_mode", lambda f, m: None)
    monkeypatch.setattr(cli_record, "_choose_attach",
                        lambda *a, **kw: ["fentry", "kprobe", "tracefs"])
    monkeypatch.setattr(cli_record, "_trace_bpf", bpf)
    monkeypatch.setattr(cli_record, "_trace_tracefs", lambda *a: ran.append("tracefs"))
    r = CliRunner().invoke(cli.main, ["trace", "-o", str(out), "-d", "1"])
    assert r.exit_code == 0, r.output
    assert ran == ["fentry", "kprobe", "tracefs"]
    assert "skbpath: fentry: bcc could not compile (fentry)" in r.output
    assert "--attach auto: fentry cannot compile here, trying kprobe" in r.output
    assert "--attach auto: kprobe cannot compile here, trying tracefs" in r.output
    assert "Traceback" not in r.output
    # An explicit mode does not fall back: one line, exit 2, and no empty trace left.
    ran.clear()
    r = CliRunner().invoke(cli.main, ["trace", "--attach", "kprobe", "-o", str(out), "-d", "1"])
    assert r.exit_code == 2 and ran == ["kprobe"]
    assert r.output == "skbpath: error: bcc could not compile (kprobe)\n"
    assert not out.exists()
