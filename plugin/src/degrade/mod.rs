//! `oldfilmdegrade`: seeded synthesis of old-film damage on clean video.

use gst::glib;
use gst::prelude::*;

mod imp;

pub use imp::DegradeOutput;

glib::wrapper! {
    pub struct OldFilmDegrade(ObjectSubclass<imp::OldFilmDegrade>) @extends gst_video::VideoFilter, gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "oldfilmdegrade",
        gst::Rank::NONE,
        OldFilmDegrade::static_type(),
    )
}
