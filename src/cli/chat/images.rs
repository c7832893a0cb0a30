//! Figures the python tool writes (a matplotlib `savefig`), drawn inline on terminals that can
//! draw images: kitty's graphics protocol, iTerm2's inline images, or sixel, through `viuer`
//! (pure Rust; sixel by `icy_sixel`). Elsewhere the figure is its path, as before.
//!
//! The protocol is chosen from the environment first. Asking a terminal what it can draw is
//! an escape sequence it must answer: one that does not (a pipe logger, `script`, a test's
//! pseudo-terminal) would leave the question unanswered and the chat waiting, so a terminal is
//! only asked once its environment names one that draws (kitty, Ghostty, WezTerm, foot,
//! mlterm, Konsole, iTerm2) or the user names the protocol with `OSSA_IMAGES`.

use std::io::IsTerminal;
use std::path::Path;

/// The variable that forces a protocol (`kitty`, `iterm`, `sixel`) or turns images `off`.
pub(super) const IMAGES_VAR: &str = "OSSA_IMAGES";

/// Image files drawn inline (what matplotlib and PIL write by default).
const DRAWN_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Figures wider than this many columns are scaled down (a wide terminal would otherwise get a
/// figure taller than its screen).
const MAX_COLUMNS: u16 = 80;

/// A larger figure is shown as its path: decoding it would cost more than a glance is worth.
const MAX_FILE_BYTES: u64 = 32 << 20;

/// How a terminal draws images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Graphics {
    Kitty,
    Iterm,
    Sixel,
}

/// The protocol of the terminal described by `var` (an environment lookup), or `None` where it
/// draws no images or is not known to; an `OSSA_IMAGES` value that names no protocol is an
/// error naming the accepted ones.
pub(super) fn detect(var: impl Fn(&str) -> Option<String>) -> Result<Option<Graphics>, String> {
    match var(IMAGES_VAR).as_deref().map(str::trim) {
        None | Some("" | "auto") => {}
        Some("off" | "none" | "0" | "false") => return Ok(None),
        Some("kitty") => return Ok(Some(Graphics::Kitty)),
        Some("iterm" | "iterm2") => return Ok(Some(Graphics::Iterm)),
        Some("sixel") => return Ok(Some(Graphics::Sixel)),
        Some(other) => {
            return Err(format!(
                "{IMAGES_VAR}={other:?} names no image protocol (auto, off, kitty, iterm, sixel); \
                 figures are shown as paths"
            ));
        }
    }
    let term = var("TERM").unwrap_or_default();
    let program = var("TERM_PROGRAM").unwrap_or_default();
    let graphics = if term == "xterm-kitty"
        || var("KITTY_WINDOW_ID").is_some()
        || term == "xterm-ghostty"
        || program == "ghostty"
    {
        Some(Graphics::Kitty)
    } else if program == "iTerm.app"
        || var("LC_TERMINAL").as_deref() == Some("iTerm2")
        || program == "WezTerm"
    {
        Some(Graphics::Iterm)
    } else if term.starts_with("foot")
        || term.starts_with("mlterm")
        || term.contains("sixel")
        || var("KONSOLE_VERSION").is_some()
    {
        Some(Graphics::Sixel)
    } else {
        None
    };
    Ok(graphics)
}

/// Whether `path` is a figure to draw.
pub(super) fn is_drawable(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| DRAWN_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        && std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() <= MAX_FILE_BYTES)
}

/// Draws the image at `path` on stdout with `graphics`, at most `columns` wide. `Ok(false)`
/// where the terminal turned out not to draw that protocol (it said so when asked): the caller
/// has shown the path already and nothing else is printed.
pub(super) fn draw(graphics: Graphics, path: &Path, columns: u16) -> Result<bool, String> {
    let image = image::ImageReader::open(path)
        .and_then(|reader| reader.with_guessed_format())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .decode()
        .map_err(|e| format!("cannot decode {}: {e}", path.display()))?;
    let _quiet = QuietInput::new();
    // Each check below asks the terminal at most once per process (viuer keeps the answer).
    let supported = match graphics {
        Graphics::Kitty => viuer::get_kitty_support() != viuer::KittySupport::None,
        Graphics::Iterm => true,
        Graphics::Sixel => viuer::is_sixel_supported(),
    };
    if !supported {
        return Ok(false);
    }
    let config = viuer::Config {
        absolute_offset: false,
        width: Some(u32::from(columns.clamp(8, MAX_COLUMNS))),
        use_kitty: graphics == Graphics::Kitty,
        use_iterm: graphics == Graphics::Iterm,
        use_sixel: graphics == Graphics::Sixel,
        ..Default::default()
    };
    viuer::print(&image, &config).map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
    Ok(true)
}

/// While alive, the terminal neither echoes nor line-buffers what it is sent: a terminal's
/// answer to viuer's question arrives as input and would otherwise be echoed onto the screen
/// before viuer reads it.
struct QuietInput {
    saved: Option<libc::termios>,
}

impl QuietInput {
    fn new() -> Self {
        if !std::io::stdin().is_terminal() {
            return Self { saved: None };
        }
        // SAFETY: termios is plain data; tcgetattr fills it for fd 0, which is a terminal
        // (checked above), and only a successful read is used.
        let saved = unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            (libc::tcgetattr(libc::STDIN_FILENO, &mut saved) == 0).then_some(saved)
        };
        if let Some(saved) = saved {
            let mut quiet = saved;
            quiet.c_lflag &= !(libc::ECHO | libc::ICANON);
            // SAFETY: `quiet` is a valid termios derived from the terminal's own settings.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) };
        }
        Self { saved }
    }
}

impl Drop for QuietInput {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: restores the settings read from the same terminal in `new`.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }

    #[test]
    fn terminals_are_known_by_their_environment() {
        type Vars = &'static [(&'static str, &'static str)];
        let cases: [(Vars, Option<Graphics>); 10] = [
            (&[("TERM", "xterm-kitty")], Some(Graphics::Kitty)),
            (
                &[("TERM", "xterm-256color"), ("KITTY_WINDOW_ID", "1")],
                Some(Graphics::Kitty),
            ),
            (&[("TERM", "xterm-ghostty")], Some(Graphics::Kitty)),
            (&[("TERM_PROGRAM", "iTerm.app")], Some(Graphics::Iterm)),
            (&[("TERM_PROGRAM", "WezTerm")], Some(Graphics::Iterm)),
            (&[("TERM", "foot")], Some(Graphics::Sixel)),
            (
                &[("TERM", "xterm-256color"), ("KONSOLE_VERSION", "250801")],
                Some(Graphics::Sixel),
            ),
            // Terminals not known to draw, and tmux (which needs pass-through), are not asked.
            (&[("TERM", "xterm-256color")], None),
            (&[("TERM", "tmux-256color")], None),
            (&[], None),
        ];
        for (vars, expected) in cases {
            assert_eq!(detect(env(vars)), Ok(expected), "{vars:?}");
        }
    }

    #[test]
    fn the_variable_forces_or_refuses_a_protocol() {
        let kitty = [("TERM", "xterm-kitty")];
        assert_eq!(detect(env(&[kitty[0], (IMAGES_VAR, "off")])), Ok(None));
        assert_eq!(
            detect(env(&[kitty[0], (IMAGES_VAR, "auto")])),
            Ok(Some(Graphics::Kitty))
        );
        assert_eq!(
            detect(env(&[("TERM", "xterm"), (IMAGES_VAR, "sixel")])),
            Ok(Some(Graphics::Sixel))
        );
        let error = detect(env(&[(IMAGES_VAR, "png")])).unwrap_err();
        ossa_test_support::assert_contains_all(&error, &["\"png\"", "kitty, iterm, sixel"]);
    }

    #[test]
    fn only_image_files_are_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("plot.PNG");
        std::fs::write(&png, b"\x89PNG").unwrap();
        let csv = dir.path().join("data.csv");
        std::fs::write(&csv, b"a,b").unwrap();
        let link = dir.path().join("link.png");
        std::os::unix::fs::symlink(&png, &link).unwrap();
        assert!(is_drawable(&png));
        assert!(!is_drawable(&csv));
        // A link the guest made is not followed to a file outside the mount.
        assert!(!is_drawable(&link));
        assert!(!is_drawable(&dir.path().join("missing.png")));
    }

    #[test]
    fn a_damaged_image_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("plot.png");
        std::fs::write(&png, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let error = draw(Graphics::Kitty, &png, 80).unwrap_err();
        assert!(error.contains("plot.png"), "{error}");
    }
}
