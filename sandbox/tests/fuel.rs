//! The fuel-metered interpreter (its own engine and compiled module, built once and cached).

use std::sync::OnceLock;
use std::time::Duration;

use ossa_sandbox::{
    CallLimits, ResetReason, Sandbox, SandboxConfig, SessionOptions, SessionState, Status, Stop,
};

fn metered() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let config = SandboxConfig {
            metered: true,
            ..SandboxConfig::from_env().expect("a data folder")
        };
        Sandbox::open(config).unwrap_or_else(|e| panic!("the metered sandbox did not open: {e}"))
    })
}

#[test]
fn fuel_stops_a_busy_loop_and_the_session_is_reset() {
    let sandbox = metered();
    assert!(sandbox.is_metered());
    let s = sandbox.session(SessionOptions::default()).unwrap();
    let base = sandbox.limits().call.clone();
    // A small cell fits a generous budget (a trivial call costs about 5e7).
    let plenty = CallLimits {
        fuel: Some(5_000_000_000),
        ..base.clone()
    };
    let out = s.run_blocking("x = sum(range(1000))\nx", &plenty).unwrap();
    assert_eq!(out.value.as_deref(), Some("499500"));

    let scarce = CallLimits {
        fuel: Some(200_000_000),
        deadline: Duration::from_secs(60),
        ..base.clone()
    };
    let out = s.run_blocking("while True:\n    pass", &scarce).unwrap();
    assert_eq!(out.status, Status::Stopped(Stop::Fuel(200_000_000)));
    assert_eq!(
        out.session,
        SessionState::Reset(ResetReason::Stopped(Stop::Fuel(200_000_000)))
    );

    // Unlimited fuel on the metered engine is the default.
    let out = s.run_blocking("'x' in dir()", &base).unwrap();
    assert_eq!(out.value.as_deref(), Some("False"));
    assert_eq!(
        out.started_fresh,
        Some(ResetReason::Stopped(Stop::Fuel(200_000_000)))
    );
}
