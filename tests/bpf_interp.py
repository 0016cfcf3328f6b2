"""A tiny classic-BPF interpreter for seccomp programs, so filters are tested without a kernel.

It runs a program (a sequence of 8-byte `struct sock_filter`) against a synthetic
`struct seccomp_data` {nr i32, arch u32, instruction_pointer u64, args u64[6]} and
returns the 32-bit action, the same idea as kafel's test harness.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000

ACTION_MASK = 0xFFFF0000
DATA_MASK = 0x0000FFFF
KILL_PROCESS = 0x80000000
ERRNO = 0x00050000
ALLOW = 0x7FFF0000

_INSN = struct.Struct("<HBBI")
_U32 = 0xFFFFFFFF
_MEMWORDS = 16

# Instruction classes, sizes, modes, ops and sources (linux/bpf_common.h).
_LD, _LDX, _ST, _STX, _ALU, _JMP, _RET, _MISC = range(8)
_ABS, _IMM, _MEM, _LEN = 0x20, 0x00, 0x60, 0x80
_A = 0x10  # RET source: the accumulator


@dataclass(frozen=True, slots=True)
class SeccompData:
    """The input the kernel hands a seccomp filter for one syscall."""

    nr: int
    args: tuple[int, ...] = ()
    arch: int = AUDIT_ARCH_X86_64
    instruction_pointer: int = 0

    def pack(self) -> bytes:
        """Lay the record out as the kernel does (little-endian x86_64)."""
        if len(self.args) > 6:
            raise ValueError("a syscall has at most 6 arguments")
        args = [a & 0xFFFFFFFFFFFFFFFF for a in (*self.args, 0, 0, 0, 0, 0, 0)[:6]]
        return struct.pack("<IIQ6Q", self.nr & _U32, self.arch, self.instruction_pointer, *args)


def _alu(op: int, a: int, operand: int) -> int:
    """One 32-bit ALU operation, as the kernel computes it."""
    if op in (0x30, 0x90) and operand == 0:  # DIV, MOD by zero ends the program in the kernel
        raise ValueError("division by zero")
    results = {
        0x00: lambda: a + operand,
        0x10: lambda: a - operand,
        0x20: lambda: a * operand,
        0x30: lambda: a // operand,
        0x40: lambda: a | operand,
        0x50: lambda: a & operand,
        0x60: lambda: a << (operand & 31),
        0x70: lambda: a >> (operand & 31),
        0x80: lambda: -a,
        0x90: lambda: a % operand,
        0xA0: lambda: a ^ operand,
    }
    if op not in results:
        raise ValueError(f"unknown ALU op {op:#x}")
    return results[op]() & _U32


def _jump_taken(op: int, a: int, operand: int) -> bool:
    """Whether a conditional jump's condition holds."""
    conditions = {
        0x10: a == operand,  # JEQ
        0x20: a > operand,  # JGT
        0x30: a >= operand,  # JGE
        0x40: bool(a & operand),  # JSET
    }
    if op not in conditions:
        raise ValueError(f"unknown JMP op {op:#x}")
    return conditions[op]


def _load_word(data: bytes, offset: int) -> int:
    """A 32-bit load from seccomp_data; the kernel only allows aligned words inside it."""
    if offset % 4 or not 0 <= offset <= len(data) - 4:
        raise ValueError(f"bad load offset {offset}")
    return int.from_bytes(data[offset : offset + 4], "little")


def _load(mode: int, k: int, raw: bytes, mem: list[int]) -> int:
    """The value an LD/LDX instruction fetches."""
    if mode == _ABS:
        return _load_word(raw, k)
    if mode == _IMM:
        return k
    if mode == _MEM:
        return mem[k]
    if mode == _LEN:
        return len(raw)
    raise ValueError(f"unknown load mode {mode:#x}")


def decode(program: bytes) -> list[tuple[int, int, int, int]]:
    """Split a program into (code, jt, jf, k) tuples."""
    if not program or len(program) % _INSN.size:
        raise ValueError("a BPF program is a non-empty sequence of 8-byte instructions")
    return [_INSN.unpack_from(program, i) for i in range(0, len(program), _INSN.size)]


def run(program: bytes, data: SeccompData) -> int:
    """Return the action the program gives for `data` (what `SECCOMP_RET_*` the kernel sees)."""
    insns = decode(program)
    raw = data.pack()
    a = x = 0
    mem = [0] * _MEMWORDS
    pc = 0
    while pc < len(insns):
        code, jt, jf, k = insns[pc]
        cls = code & 0x07
        pc += 1
        if cls == _RET:
            return (a if code & 0x18 == _A else k) & _U32
        if cls in (_LD, _LDX):
            value = _load(code & 0xE0, k, raw, mem)
            if cls == _LD:
                a = value
            else:
                x = value
        elif cls == _ST:
            mem[k] = a
        elif cls == _STX:
            mem[k] = x
        elif cls == _ALU:
            a = _alu(code & 0xF0, a, x if code & 0x08 else k)
        elif cls == _JMP:
            op = code & 0xF0
            if op == 0x00:  # JA
                pc += k
            else:
                pc += jt if _jump_taken(op, a, x if code & 0x08 else k) else jf
        else:  # MISC: TAX / TXA
            if code & 0xF8:
                a = x
            else:
                x = a
    raise ValueError("program ran off the end without RET")


def describe(action: int) -> str:
    """Name an action the way the tests' tables spell it."""
    kind = action & ACTION_MASK
    if kind == ALLOW:
        return "ALLOW"
    if kind == KILL_PROCESS:
        return "KILL_PROCESS"
    if kind == ERRNO:
        return f"ERRNO({action & DATA_MASK})"
    return f"OTHER({action:#010x})"
