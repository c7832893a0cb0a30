//! Which instruction set the kernels run with, found at run time.
//!
//! An [`Isa`] is a token: only [`Isa::available`] (and the functions built on it) make one,
//! after checking the CPU. The kernels' safe entry points take an `Isa` and run the matching
//! `unsafe` SIMD code, so holding one must prove the CPU can run it; nothing outside this
//! module can build, say, an AVX-512 `Isa` on a CPU without AVX-512.

use crate::error::{EngineError, Result};

/// The levels, worst first (the order [`Isa::available`] lists them in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Level {
    /// Portable Rust (the reference; runs everywhere).
    Scalar,
    /// AVX2 + FMA: `pmaddubsw`/`pmaddwd` on 256-bit vectors.
    Avx2,
    /// AVX-VNNI (VEX-encoded `vpdpbusd`) on 256-bit vectors.
    AvxVnni,
    /// AVX-512 F/BW/DQ/VL + VNNI: `vpdpbusd` on 512-bit vectors, two blocks per instruction.
    Avx512Vnni,
    /// AVX-512 VNNI plus AMX tiles for prefill (`tdpbssd` for the int8 matmuls, `tdpbf16ps`
    /// for attention): needs the CPU's AMX-TILE, AMX-INT8, AMX-BF16 and AVX-512 BF16, and the
    /// kernel's permission to use tile data, asked once per process.
    Amx,
}

const LEVELS: [Level; 5] = [
    Level::Scalar,
    Level::Avx2,
    Level::AvxVnni,
    Level::Avx512Vnni,
    Level::Amx,
];

/// Instruction set a kernel runs with (see the module docs: only detection makes one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Isa(Level);

impl Isa {
    /// The portable reference; every CPU runs it.
    pub const SCALAR: Isa = Isa(Level::Scalar);

    pub(crate) fn level(self) -> Level {
        self.0
    }

    /// The best instruction set this CPU supports; `OSSA_ISA=scalar|avx2|avxvnni|avx512vnni|amx`
    /// picks another (for comparisons; `avx512vnni` forbids AMX), ignored with a warning when
    /// the CPU lacks it.
    pub fn detect() -> Isa {
        let best = Isa::best();
        match std::env::var("OSSA_ISA") {
            Ok(name) => Isa::named(&name).unwrap_or_else(|e| {
                tracing::warn!("OSSA_ISA ignored: {e}");
                best
            }),
            Err(_) => best,
        }
    }

    /// The best instruction set this CPU supports.
    pub fn best() -> Isa {
        *Isa::available().last().unwrap_or(&Isa::SCALAR)
    }

    /// The instruction set called `name` (as [`Isa::name`] spells it, any case), if this CPU
    /// can run it.
    pub fn named(name: &str) -> Result<Isa> {
        let available = Isa::available();
        available
            .iter()
            .copied()
            .find(|isa| isa.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| EngineError::IsaUnavailable {
                wanted: LEVELS
                    .iter()
                    .map(|&l| Isa(l).name())
                    .find(|n| n.eq_ignore_ascii_case(name.trim()))
                    .unwrap_or("unknown"),
                available: available
                    .iter()
                    .map(|i| i.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Every instruction set this CPU can run, worst first (always starts with scalar).
    pub fn available() -> Vec<Isa> {
        let mut out = vec![Isa::SCALAR];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                out.push(Isa(Level::Avx2));
                if is_x86_feature_detected!("avxvnni") {
                    out.push(Isa(Level::AvxVnni));
                }
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512dq")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
                {
                    out.push(Isa(Level::Avx512Vnni));
                    if cpu_has_amx() && is_x86_feature_detected!("avx512bf16") && amx_permitted() {
                        out.push(Isa(Level::Amx));
                    }
                }
            }
        }
        out
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::AvxVnni => "avxvnni",
            Level::Avx512Vnni => "avx512vnni",
            Level::Amx => "amx",
        }
    }
}

/// Whether this process may use AMX tile data: asks Linux once (the answer is kept).
#[cfg(target_arch = "x86_64")]
fn amx_permitted() -> bool {
    static PERMITTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PERMITTED.get_or_init(request_permission)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes which register state the kernel
    // lets this process use; it reads and writes no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    if rc != 0 {
        tracing::info!(
            error = %std::io::Error::last_os_error(),
            "the kernel refused AMX tile data; using the AVX-512 kernels"
        );
    }
    rc == 0
}

#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn request_permission() -> bool {
    false
}

/// CPUID leaf 7: AMX-BF16 (EDX bit 22), AMX-TILE (24) and AMX-INT8 (25). The standard
/// library's feature detection does not name them on stable Rust.
#[cfg(target_arch = "x86_64")]
fn cpu_has_amx() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // Safe functions (CPUID exists on every x86-64 CPU); leaf 7 only when the CPU reports it.
    if __cpuid(0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    [22, 24, 25].iter().all(|bit| edx & (1 << bit) != 0)
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_or_missing_ones_are_refused() {
        for isa in Isa::available() {
            assert_eq!(Isa::named(isa.name()).ok(), Some(isa));
            assert_eq!(Isa::named(&isa.name().to_uppercase()).ok(), Some(isa));
        }
        assert_eq!(Isa::named("scalar").ok(), Some(Isa::SCALAR));
        let err = Isa::named("sse9").unwrap_err().to_string();
        assert!(err.contains("unknown") && err.contains("scalar"), "{err}");
        // A level this CPU lacks is refused by name, never handed out.
        for level in LEVELS {
            let have = Isa::available().contains(&Isa(level));
            assert_eq!(Isa::named(Isa(level).name()).is_ok(), have, "{level:?}");
        }
    }
}
