//! The one place that prints: human text (colors only on a TTY, never with `NO_COLOR`) and the
//! JSON report. Results go to stdout, progress and diagnostics to stderr.

/// Escape control characters (except newline and tab) so child output and config text cannot
/// drive the terminal.
pub fn escape_control(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
