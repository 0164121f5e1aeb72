//! `oldfilmrestore`: classic old-film clean-up over a temporal window of frames.

use gst::glib;
use gst::prelude::*;

mod imp;
mod prior;

pub use imp::CompareMode;

glib::wrapper! {
    pub struct OldFilmRestore(ObjectSubclass<imp::OldFilmRestore>) @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "oldfilmrestore",
        gst::Rank::NONE,
        OldFilmRestore::static_type(),
    )
}
