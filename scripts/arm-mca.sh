#!/usr/bin/env bash
# Arm int8 kernel throughput without a board: llvm-mca's estimate of each GEMM inner
# loop, as compiled into the device binary (vlm-lite, aarch64, whole-program LTO: the
# code that ships), on the cores the project targets, against that core's int8 peak.
#
# The kernels mark one iteration of their inner loop (`mca_region!` in
# runtime/src/kernels/mod.rs, compiled in only with `--cfg vlm_mca`) with the tile's
# rows and the multiply-accumulates one iteration does. The loop measured is the whole
# basic block around the marker (from its label to the branch back to it), since the
# compiler schedules instructions across a marker. The peak is llvm-mca's throughput for
# 8 independent copies of the ISA's widest int8 multiply-accumulate: `sdot` (16 MACs)
# for dotprod, `usmmla` (32) for i8mm, `smlal` (8, into 16 bits) for plain NEON.
#
# The 32-bit Arm (armv7) kernel is assembly written out in `asm!` with its marker inside
# as a comment; the same build for armv7-unknown-linux-gnueabihf finds it, and its peak
# is `vmlal.s8` (8 MACs, into 16 bits) on the cores LLVM models for 32-bit code (the
# Cortex-A7 and A53 have no model: the A9's in-order NEON and the A57's stand in).
#
# Prints one row per kernel, tile height and core: cycles per iteration, cycles per
# 1,000 MACs, MACs per cycle and the share of the peak. llvm-mca models the core's
# pipelines and ignores the memory system (every load hits L1), and its scheduling
# models are the LLVM release's own (some cores borrow a relative's model): an estimate,
# not a measurement.
#
#   MCA          the llvm-mca to use (default: the newest llvm-mca-NN on PATH, else
#                llvm-mca; Debian 12's llvm-19 package has one)
#   MCA_CORES    cores, space-separated (default: cortex-a55 cortex-a72 cortex-a76
#                cortex-a78 neoverse-n1 neoverse-n2)
#   MCA_CORES32  cores for the armv7 kernel (default: cortex-a9 cortex-a57)
set -euo pipefail
cd "$(dirname "$0")/.."
# The newest llvm-mca there is: its scheduling models cover more of these cores (LLVM
# 14's give A72, A76, A78 and N1 one and the same model).
newest=$(compgen -c llvm-mca- | grep -E '^llvm-mca-[0-9]+$' | sort -t- -k3 -n | tail -n1 || true)
mca="${MCA:-${newest:-llvm-mca}}"
cores="${MCA_CORES:-cortex-a55 cortex-a72 cortex-a76 cortex-a78 neoverse-n1 neoverse-n2}"
cores32="${MCA_CORES32:-cortex-a9 cortex-a57}"
command -v "$mca" >/dev/null || { echo "llvm-mca is needed (apt-get install llvm-19)" >&2; exit 1; }
work="${CARGO_TARGET_DIR:-$PWD/target}/mca"
# assembly TARGET: builds vlm-lite for TARGET with the markers, prints the .s file.
assembly() {
  local target=$1
  rustup target add "$target" >/dev/null
  echo "==> vlm-lite for $target with the kernels' loop markers (--cfg vlm_mca), as assembly" >&2
  RUSTFLAGS="--cfg vlm_mca" CARGO_TARGET_DIR="$work" \
    cargo rustc --quiet --profile release-lite --manifest-path targets/vlm-lite/Cargo.toml \
    --target "$target" -- --emit asm
  ls -t "$work/$target/release-lite/deps/"vlm_lite-*.s | head -n1
}
# cargo links the binary as well: the cross linkers (scripts/cross-test.sh installs the
# aarch64 one; the armv7 one is gcc-arm-linux-gnueabihf).
: "${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:=aarch64-linux-gnu-gcc}"
: "${CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER:=arm-linux-gnueabihf-gcc}"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER
asm=$(assembly aarch64-unknown-linux-gnu)
asm32=$(assembly armv7-unknown-linux-gnueabihf)
echo "==> $($mca --version | grep -m1 -i version | sed 's/^ *//') on $asm and $asm32" >&2

python3 - "$mca" "$asm" "$cores" "$asm32" "$cores32" <<'EOF'
import re, subprocess, sys, tempfile

mca = sys.argv[1]

# Which cores have which ISA (Arm's TRMs): dotprod from Armv8.2 (A55, A76, A78, N1),
# i8mm from Armv8.6 (N2); the A72 has neither.
DOTPROD = {"cortex-a55", "cortex-a76", "cortex-a78", "neoverse-n1", "neoverse-n2"}
I8MM = {"neoverse-n2"}
# Per instruction set: llvm-mca's triple and features, and for each kernel family one
# peak instruction and the MACs it does.
ARCHS = {
    "aarch64": ("aarch64", "+neon,+dotprod,+i8mm", {
        "neon": ("smlal v{i}.8h, v16.8b, v17.8b", 8),
        "dotprod": ("sdot v{i}.4s, v16.16b, v17.4b[0]", 16),
        "i8mm": ("usmmla v{i}.4s, v16.16b, v17.16b", 32),
    }),
    "armv7": ("armv7-linux-gnueabihf", "+neon", {
        "armv7neon": ("vmlal.s8 q{i}, d16, d17", 8),
    }),
}
arch = "aarch64"


def cycles_per_iteration(body: list[str], core: str) -> float:
    triple, attrs, _ = ARCHS[arch]
    with tempfile.NamedTemporaryFile("w", suffix=".s") as f:
        f.write("\n".join(body) + "\n")
        f.flush()
        out = subprocess.run([mca, f"-mtriple={triple}", f"-mcpu={core}", f"-mattr={attrs}",
                              "-iterations=500", f.name], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"llvm-mca -mcpu={core}: {out.stderr.strip()}")
    it = int(re.search(r"Iterations:\s+(\d+)", out.stdout).group(1))
    cyc = int(re.search(r"Total Cycles:\s+(\d+)", out.stdout).group(1))
    return cyc / it


def comment(s: str) -> bool:
    return s.startswith(("//", "@"))


def loop_around(lines: list[str], i: int) -> list[str]:
    """The instructions of the basic block holding line i, from its label to the branch
    back to that label (markers, comments and directives dropped). A numeric label
    (`1:`, as hand-written assembly has) is branched back to as `1b`."""
    start = i
    while not re.match(r"^\.?\w+:", lines[start].strip()):
        start -= 1
    label = lines[start].strip().rstrip(":")
    back = label + "b" if label.isdigit() else label
    body = []
    for line in lines[start + 1:]:
        s = line.strip()
        if not s or comment(s) or s.startswith(".") or re.match(r"^\.?\w+:", s):
            if re.match(r"^\.?\w+:", s):
                raise SystemExit(f"the loop at {label} is more than one block")
            continue
        s = re.split(r"//|@", s)[0].strip()
        if re.search(rf"[\s,]{re.escape(back)}$", s) and s.split()[0].startswith(("b", "cb", "tb")):
            # The branch itself only closes the loop (llvm-mca cannot place a local label).
            return body + ([s] if not label.isdigit() else [])
        body.append(s)
    raise SystemExit(f"no branch back to {label}")


print(f"{'kernel':<24} {'rows':>4} {'core':<12} {'cyc/iter':>8} {'cyc/1k MAC':>10} {'MAC/cyc':>8} {'peak':>6} {'of peak':>8}")
rows = []
for arch, asm, cores in [("aarch64", sys.argv[2], sys.argv[3].split()),
                         ("armv7", sys.argv[4], sys.argv[5].split())]:
    lines = open(asm).read().splitlines()
    regions = {}
    for i, line in enumerate(lines):
        m = re.search(r"LLVM-MCA-BEGIN (\S+)-r(\d+)-macs(\d+)", line)
        if m:
            regions[(m.group(1), int(m.group(2)))] = (int(m.group(3)), loop_around(lines, i))
    if not regions:
        raise SystemExit(f"no marked loops in {asm} (was it built with --cfg vlm_mca?)")
    peaks = {}
    for core in cores:
        for isa, (ins, macs) in ARCHS[arch][2].items():
            body = [ins.format(i=i) for i in range(8)]
            peaks[core, isa] = 8 * macs / cycles_per_iteration(body, core)
    for (name, r), (macs, body) in sorted(regions.items()):
        isa = name.split("-")[0]
        for core in cores:
            if (isa == "dotprod" and core not in DOTPROD) or (isa == "i8mm" and core not in I8MM):
                continue
            cpi = cycles_per_iteration(body, core)
            rate = macs / cpi
            peak = peaks[core, isa]
            rows.append((name, r, core, cpi, 1000 * cpi / macs, rate, peak, rate / peak))
for name, r, core, cpi, per_k, rate, peak, share in rows:
    print(f"{name:<24} {r:>4} {core:<12} {cpi:>8.1f} {per_k:>10.1f} {rate:>8.1f} {peak:>6.1f} {100 * share:>7.0f}%")
print()
print("| kernel | rows | core | cycles / iteration | cycles / 1k MAC | MAC / cycle | peak | of peak |")
print("|---|---:|---|---:|---:|---:|---:|---:|")
for name, r, core, cpi, per_k, rate, peak, share in rows:
    print(f"| {name} | {r} | {core} | {cpi:.1f} | {per_k:.1f} | {rate:.1f} | {peak:.1f} | {100 * share:.0f} % |")
EOF
