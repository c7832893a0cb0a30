//! `ossa chat` draws the figures Python saves, in a pseudo-terminal as a person sees them: a
//! scripted model (`--backend openai-completions`) runs matplotlib in the real sandbox, and the
//! test plays the terminal. As foot (a sixel terminal) it answers the device-attributes
//! question that advertises sixel, and the figure arrives as sixel graphics under its path; as
//! a terminal that draws nothing, the path is shown alone and the terminal is never asked.

mod support;
#[path = "support/terminal.rs"]
mod terminal;

use support::scripted::ScriptedServer;
use terminal::{Terminal, ossa};

const PLOT: &str = "import matplotlib\n\
                    matplotlib.use('Agg')\n\
                    import matplotlib.pyplot as plt\n\
                    plt.plot([1, 2, 3], [1, 4, 9])\n\
                    plt.savefig('/mnt/data/squares.png')\n\
                    print('saved')";

/// The device attributes xterm answers with its sixel option on (`4` is sixel).
const SIXEL_DA1: &str = "\x1b[?63;1;2;4;6;9;15;22c";

fn script(model: &ScriptedServer) {
    model.script_python_then_answer(PLOT, "Here it is.");
}

/// Runs one plotting turn in a terminal whose `TERM` is `term`; `answer` plays the terminal's
/// reply to a device-attributes question. Returns everything printed.
fn plot_in(term: &str, answer: Option<&str>) -> String {
    let model = ScriptedServer::start();
    script(&model);
    let home = tempfile::tempdir().expect("tempdir");
    let history = home.path().join("history");
    let mut args: Vec<String> = vec!["chat".into()];
    args.extend(model.backend_args());
    args.extend(["--python".into(), "--history".into()]);
    args.push(history.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut command = ossa(home.path(), &args);
    command.env("TERM", term).env_remove("OSSA_IMAGES");
    for var in [
        "TERM_PROGRAM",
        "KITTY_WINDOW_ID",
        "LC_TERMINAL",
        "KONSOLE_VERSION",
    ] {
        command.env_remove(var);
    }
    let mut terminal = Terminal::spawn(command);
    terminal.expect(">>> ");
    terminal.enter("Plot the squares.");
    if let Some(answer) = answer {
        // The question comes after the figure's path is shown.
        terminal.expect("squares.png");
        let deadline = std::time::Instant::now() + terminal::PATIENCE;
        while !String::from_utf8_lossy(&terminal.raw()).contains("\x1b[c") {
            assert!(
                std::time::Instant::now() < deadline,
                "never asked: {:?}",
                String::from_utf8_lossy(&terminal.raw())
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        terminal.send(answer);
    }
    terminal.expect("Here it is.");
    terminal.expect(">>> ");
    terminal.enter("/exit");
    assert!(terminal.wait().success());
    String::from_utf8_lossy(&terminal.raw()).into_owned()
}

#[test]
fn a_sixel_terminal_gets_the_figure() {
    let raw = plot_in("foot", Some(SIXEL_DA1));
    let path = raw.find("squares.png").expect("the path is shown");
    // A sixel image: DCS … q <pixels> ST, after the path.
    let start = raw[path..]
        .find("\x1bP")
        .map(|at| path + at)
        .unwrap_or_else(|| panic!("no sixel image: {raw:?}"));
    let end = raw[start..].find("\x1b\\").expect("the image ends") + start;
    let image = &raw[start..end];
    assert!(image.contains('q') && image.contains('#'), "{image:?}");
    assert!(
        image.len() > 1000,
        "a figure, not an empty image: {} bytes",
        image.len()
    );
    // The terminal's answer was not echoed onto the screen.
    assert!(!raw.contains("63;1;2;4"), "{raw:?}");
}

#[test]
fn a_terminal_that_draws_nothing_gets_the_path_alone_and_no_question() {
    let raw = plot_in("xterm-256color", None);
    assert!(raw.contains("squares.png"), "{raw:?}");
    assert!(!raw.contains("\x1bP"), "no image: {raw:?}");
    assert!(
        !raw.contains("\x1b[c"),
        "the terminal is not asked: {raw:?}"
    );
    assert!(!raw.contains("\x1b_G"), "no kitty query: {raw:?}");
}
