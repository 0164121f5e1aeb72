//! GStreamer plugin `oldfilm`: `oldfilmrestore` cleans up old film live, `oldfilmdegrade`
//! synthesises old-film damage on clean video. The maths lives in the `kernels` crate; this
//! crate is the GStreamer glue.

use gst::glib;

mod degrade;
mod restore;
pub mod video;

pub use degrade::DegradeOutput;
pub use restore::CompareMode;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    restore::register(plugin)?;
    degrade::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    oldfilm,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);

/// Registers the elements with the running process, for applications and tests that link the
/// plugin statically (the CLI, the gstreamer-check Harness).
pub fn register_static() -> Result<(), glib::BoolError> {
    plugin_register_static()
}
