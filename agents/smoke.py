"""Smoke-test the built sample agents under wasmtime.

Usage (from the project root):

    .venv/bin/python agents/smoke.py           # run the checks; exit 1 on any failure
    .venv/bin/python agents/smoke.py --bench   # also report primes fuel and wall time

Each agent runs the way the platform runs it: a WASI command with argv = [slug],
input on stdin, no environment and no preopened directories. Fuel metering is
on, so the fuel figures match what a metered run would be charged.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import wasmtime
from smoke_evaluators import bench as bench_evaluators
from smoke_evaluators import evaluators

AGENTS_DIR = Path(__file__).resolve().parent
DIST_DIR = AGENTS_DIR / "dist"
FUEL = 10**12


@dataclass
class Run:
    exit_code: int | None  # None: trapped
    stdout: bytes
    stderr: bytes
    fuel_used: int
    elapsed: float

    def json(self) -> dict:
        return json.loads(self.stdout)


class Runner:
    def __init__(self) -> None:
        config = wasmtime.Config()
        config.consume_fuel = True
        self.engine = wasmtime.Engine(config)
        self.modules: dict[str, wasmtime.Module] = {}

    def module(self, slug: str) -> wasmtime.Module:
        if slug not in self.modules:
            self.modules[slug] = wasmtime.Module.from_file(
                self.engine, str(DIST_DIR / f"{slug}.wasm")
            )
        return self.modules[slug]

    def run(self, slug: str, data: bytes) -> Run:
        module = self.module(slug)
        with tempfile.TemporaryDirectory() as tmp:
            stdin = os.path.join(tmp, "stdin")
            stdout = os.path.join(tmp, "stdout")
            stderr = os.path.join(tmp, "stderr")
            with open(stdin, "wb") as fh:
                fh.write(data)
            wasi = wasmtime.WasiConfig()
            wasi.argv = [slug]
            wasi.stdin_file = stdin
            wasi.stdout_file = stdout
            wasi.stderr_file = stderr
            store = wasmtime.Store(self.engine)
            store.set_wasi(wasi)
            store.set_fuel(FUEL)
            linker = wasmtime.Linker(self.engine)
            linker.define_wasi()
            started = time.perf_counter()
            exit_code: int | None = 0
            try:
                instance = linker.instantiate(store, module)
                start = instance.exports(store)["_start"]
                assert isinstance(start, wasmtime.Func)
                start(store)
            except wasmtime.ExitTrap as exc:  # before Trap/WasmtimeError: exit() lands here
                exit_code = exc.code
            except wasmtime.Trap:
                exit_code = None
            elapsed = time.perf_counter() - started
            fuel_used = FUEL - store.get_fuel()
            with open(stdout, "rb") as fh:
                out = fh.read()
            with open(stderr, "rb") as fh:
                err = fh.read()
        return Run(exit_code, out, err, fuel_used, elapsed)


# Unicode White_Space, as documented in wordcount.c.
WHITE_SPACE = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


def reference_wordcount(data: bytes) -> dict:
    text = data.decode("utf-8", "replace")
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    words = len([w for w in WHITE_SPACE.split(text) if w])
    return {"words": words, "lines": lines, "chars": len(text), "bytes": len(data)}


def reference_primes(n: int) -> tuple[int, int | None]:
    if n < 2:
        return 0, None
    sieve = bytearray([1]) * (n + 1)
    sieve[0] = sieve[1] = 0
    for i in range(2, int(n**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, n + 1, i)))
    return sum(sieve), max(i for i in range(n + 1) if sieve[i])


WORD = re.compile(rb"[A-Za-z0-9'\x80-\xff]+")


def reference_wordstats(options: dict) -> dict:
    """What wordstats.c documents, for an input that matches its input schema."""
    text = options["text"].encode("utf-8", "surrogatepass").decode("utf-8", "replace").encode()
    if options.get("ignore_case"):
        text = bytes(c + 32 if 65 <= c <= 90 else c for c in text)
    least = options.get("min_length", 1)
    words = [w for w in WORD.findall(text) if len(w.decode()) >= least]
    counts: dict[bytes, int] = {}
    for word in words:
        counts[word] = counts.get(word, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    top = [{"word": w.decode(), "count": n} for w, n in ranked[: options.get("top", 5)]]
    return {"words": len(words), "unique": len(counts), "top": top}


def lexicon(name: str) -> list[str]:
    """The POSITIVE or NEGATIVE word list as written in sentiment.c."""
    source = (AGENTS_DIR / "src" / "sentiment.c").read_text()
    match = re.search(r"\b" + name + r"\[\] = \{(.*?)\};", source, re.S)
    assert match, name
    return re.findall(r'"([^"]*)"', match.group(1))


class Checks:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.failures = 0
        self.passed = 0

    def expect(self, label: str, condition: bool, detail: str = "") -> None:
        if condition:
            self.passed += 1
        else:
            self.failures += 1
            print(f"FAIL {label}" + (f": {detail}" if detail else ""))

    def ok(self, slug: str, data: bytes) -> Run:
        run = self.runner.run(slug, data)
        self.expect(
            f"{slug} {data[:40]!r} exits 0",
            run.exit_code == 0,
            f"exit {run.exit_code}, stderr {run.stderr!r}",
        )
        return run

    def json_is(self, slug: str, data: bytes, expected_line: str) -> None:
        run = self.ok(slug, data)
        self.expect(
            f"{slug} {data[:40]!r}",
            run.stdout == expected_line.encode() + b"\n",
            f"got {run.stdout!r}, want {expected_line!r}",
        )

    def fails(self, slug: str, data: bytes, code: int, stderr_has: bytes) -> None:
        run = self.runner.run(slug, data)
        self.expect(
            f"{slug} {data[:40]!r} exits {code}",
            run.exit_code == code and stderr_has in run.stderr and run.stdout == b"",
            f"exit {run.exit_code}, stdout {run.stdout!r}, stderr {run.stderr!r}",
        )

    def wordstats(self, rng: random.Random) -> None:
        self.json_is(
            "wordstats",
            b'{"text": "The cat and the hat. The END", "ignore_case": true, "top": 2}',
            '{"words": 7, "unique": 5, "top": [{"word": "the", "count": 3}, '
            '{"word": "and", "count": 1}]}',
        )
        self.json_is("wordstats", b'{"text": ""}', '{"words": 0, "unique": 0, "top": []}')
        self.fails("wordstats", b"[1]", 2, b"must be a JSON object")
        self.fails("wordstats", b'{"top": 3}', 2, b'no "text"')
        alphabet = ["a", "B", "b", "é", "😀", "'", " ", ".", "\n", '"', "\\", "\u0001"]
        for _ in range(50):
            options = {
                "text": "".join(rng.choice(alphabet) for _ in range(rng.randrange(60))),
                "ignore_case": rng.random() < 0.5,
                "min_length": rng.randrange(1, 4),
                "top": rng.randrange(0, 6),
            }
            # The platform hands the agent compact JSON with sorted keys.
            data = json.dumps(options, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
            run = self.ok("wordstats", data.encode())
            self.expect(
                f"wordstats matches reference for {data[:40]!r}",
                run.stdout.endswith(b"\n") and run.json() == reference_wordstats(options),
                f"got {run.stdout!r}, want {reference_wordstats(options)}",
            )

    def echo(self, rng: random.Random) -> None:
        for data in [
            b"",
            b"hello\n",
            bytes(range(256)) * 3,
            rng.randbytes(100_000),
            rng.randbytes(1 << 20),
        ]:
            run = self.ok("echo", data)
            self.expect(f"echo roundtrip of {len(data)} bytes", run.stdout == data)
            self.expect("echo is quiet on stderr", run.stderr == b"")

    def wordcount(self, rng: random.Random) -> None:
        wc = '{{"words": {}, "lines": {}, "chars": {}, "bytes": {}}}'
        self.json_is("wordcount", b"hello world\nfoo", wc.format(3, 2, 15, 15))
        self.json_is("wordcount", b"", wc.format(0, 0, 0, 0))
        self.json_is("wordcount", b"a\n", wc.format(1, 1, 2, 2))
        self.json_is("wordcount", b"\n\n", wc.format(0, 2, 2, 2))
        self.json_is(
            "wordcount",
            "h\u00e9llo w\u00f6rld \u2014 \U0001f600\n".encode(),
            wc.format(4, 1, 16, 23),
        )
        self.json_is("wordcount", "a\u00a0b\u3000c".encode(), wc.format(3, 1, 5, 8))
        self.json_is("wordcount", b"\xff\xfe ok \xe2\x82", wc.format(3, 1, 7, 8))
        alphabet = [
            b" ",
            b"\n",
            b"\t",
            b"x",
            b"yz",
            "\u00e9".encode(),
            "\u2003".encode(),
            "\U0001f600".encode(),
            b"\x80",
            b"\xc3",
            b"\xe2\x80",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
            b"\x00",
        ]
        for _ in range(40):
            data = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 400)))
            run = self.ok("wordcount", data)
            self.expect(
                f"wordcount matches reference for {data[:40]!r}",
                run.json() == reference_wordcount(data),
                f"got {run.stdout!r}, want {reference_wordcount(data)}",
            )
        big = rng.randbytes(300_000)
        self.expect(
            "wordcount of random bytes",
            self.ok("wordcount", big).json() == reference_wordcount(big),
        )

    def sentiment(self) -> None:
        def line(score: int, pos: int, neg: int, label: str, words: int) -> str:
            return (
                f'{{"score": {score}, "positive": {pos}, "negative": {neg}, '
                f'"label": "{label}", "words": {words}}}'
            )

        self.json_is("sentiment", b"I love this great product", line(2, 2, 0, "positive", 5))
        self.json_is(
            "sentiment",
            b"Terrible. It CRASHED twice and support was useless!",
            line(-3, 0, 3, "negative", 8),
        )
        self.json_is("sentiment", b"", line(0, 0, 0, "neutral", 0))
        self.json_is("sentiment", b"good but slow", line(0, 1, 1, "neutral", 3))
        self.json_is("sentiment", b"'GREAT' greatness great's", line(1, 1, 0, "positive", 3))
        self.json_is(
            "sentiment",
            "don\u2019t hate it \u2014 it\u2019s fine".encode(),
            line(-1, 0, 1, "negative", 5),
        )
        self.json_is("sentiment", b"''' 123 ... --", line(0, 0, 0, "neutral", 0))
        self.json_is("sentiment", b"caf\xc3\xa9 good\xe2\x80bad", line(0, 1, 1, "neutral", 3))
        self.json_is("sentiment", b"a" * 100_000 + b" love", line(1, 1, 0, "positive", 2))
        positive, negative = lexicon("POSITIVE"), lexicon("NEGATIVE")
        self.expect(
            "lexicons are sorted, disjoint, ~40 words each",
            positive == sorted(positive)
            and negative == sorted(negative)
            and not set(positive) & set(negative)
            and 35 <= len(positive) <= 50
            and 35 <= len(negative) <= 50,
        )
        for words, expected in [(positive, (1, 0)), (negative, (0, 1))]:
            for word in words:
                for text in (word, word.upper(), f"x {word.capitalize()}!"):
                    run = self.ok("sentiment", text.encode())
                    got = run.json()
                    self.expect(
                        f"sentiment knows {text!r}",
                        (got["positive"], got["negative"]) == expected,
                        str(got),
                    )
            run = self.ok("sentiment", " ".join(words).encode())
            self.expect(
                "sentiment counts every lexicon word",
                run.json()["positive" if expected[0] else "negative"] == len(words),
            )

    def primes(self, rng: random.Random) -> None:
        def line(n: int, count: int, largest: int | None) -> str:
            shown = "null" if largest is None else str(largest)
            return f'{{"n": {n}, "count": {count}, "largest": {shown}}}'

        self.json_is("primes", b"100", line(100, 25, 97))
        self.json_is("primes", b"  \t100\r\n", line(100, 25, 97))
        self.json_is("primes", b"0", line(0, 0, None))
        self.json_is("primes", b"1", line(1, 0, None))
        self.json_is("primes", b"2", line(2, 1, 2))
        self.json_is("primes", b"3", line(3, 2, 3))
        self.json_is("primes", b"000097", line(97, 25, 97))
        self.json_is("primes", b"1000000\n", line(1_000_000, 78_498, 999_983))
        for n in [
            4,
            9,
            25,
            49,
            65_535,
            65_536,
            65_537,
            131_071,
            131_074,
            262_147,
            *(rng.randrange(0, 400_000) for _ in range(6)),
        ]:
            count, largest = reference_primes(n)
            self.json_is("primes", str(n).encode(), line(n, count, largest))
        message = b"primes: expected an integer between 0 and 50000000\n"
        for bad in [
            b"abc",
            b"",
            b"  \n",
            b"-1",
            b"+5",
            b"1 2",
            b"12a",
            b"1.5",
            b"50000001",
            b"99999999999999999999999",
            b"\x00",
        ]:
            self.fails("primes", bad, 2, message)
        self.expect(
            "primes error message is exact", self.runner.run("primes", b"abc").stderr == message
        )


def bench(runner: Runner) -> None:
    print("primes: fuel and wall time (wasmtime, fuel metering on)")
    for n in [1_000, 100_000, 1_000_000, 10_000_000, 50_000_000]:
        run = runner.run("primes", str(n).encode())
        assert run.exit_code == 0, run.stderr
        print(
            f"  n={n:>10,}  fuel={run.fuel_used:>13,}  time={run.elapsed * 1000:8.1f} ms  "
            f"{run.stdout.decode().strip()}"
        )
    for slug, data in [
        ("echo", b"x" * (1 << 20)),
        ("wordcount", b"lorem ipsum " * 87_381),
        ("sentiment", b"great product, slow support " * 37_449),
    ]:
        run = runner.run(slug, data)
        print(
            f"  {slug} of {len(data):,} bytes: fuel={run.fuel_used:,}  "
            f"time={run.elapsed * 1000:.1f} ms"
        )
    bench_evaluators(runner)


def main() -> int:
    parser = argparse.ArgumentParser(description="Smoke-test the sample WASM agents.")
    parser.add_argument("--bench", action="store_true", help="report fuel and wall time")
    args = parser.parse_args()
    runner = Runner()
    checks = Checks(runner)
    rng = random.Random(20240601)
    checks.echo(rng)
    checks.wordcount(rng)
    checks.sentiment()
    checks.primes(rng)
    checks.wordstats(rng)
    evaluators(checks, rng)
    print(f"{checks.passed} checks passed, {checks.failures} failed")
    if args.bench:
        bench(runner)
    return 1 if checks.failures else 0


if __name__ == "__main__":
    sys.exit(main())
