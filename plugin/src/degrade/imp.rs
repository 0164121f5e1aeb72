//! The `oldfilmdegrade` subclass: a `VideoFilter` that unpacks each frame, damages it with the
//! seeded `kernels::degrade::Degrader`, and packs it back (or packs the damage mask instead).

use crate::video::{copy_packed_rows, filter_pad_templates, lock, pack_frame, parse_caps, unpack_frame};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::subclass::prelude::*;
use kernels::degrade::{DamageParams, Degrader};
use kernels::{PixelFormat, Plane, WorkFrame};
use std::sync::{LazyLock, Mutex};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "oldfilmdegrade",
        gst::DebugColorFlags::empty(),
        Some("Old film damage synthesis"),
    )
});

/// What the element outputs.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstOldFilmDegradeOutput")]
pub enum DegradeOutput {
    #[default]
    #[enum_value(name = "Damaged: the input with synthetic damage", nick = "damaged")]
    Damaged = 0,
    #[enum_value(
        name = "Mask: grey frame marking damage (0 clean, 128 line scratch, 255 blotch) for scoring",
        nick = "mask"
    )]
    Mask = 1,
}

const DEFAULT_SEED: u64 = 0;
const DEFAULT_BLOTCHES: f64 = 0.5;
const DEFAULT_SCRATCHES: f64 = 0.5;
const DEFAULT_FLICKER: f64 = 0.5;
const DEFAULT_GRAIN: f64 = 0.5;
const DEFAULT_BLUR: f64 = 0.0;
const DEFAULT_GATE_WEAVE: f64 = 0.0;

#[derive(Debug, Clone, Copy)]
struct Settings {
    seed: u64,
    blotches: f64,
    scratches: f64,
    flicker: f64,
    grain: f64,
    blur: f64,
    gate_weave: f64,
    output: DegradeOutput,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            seed: DEFAULT_SEED,
            blotches: DEFAULT_BLOTCHES,
            scratches: DEFAULT_SCRATCHES,
            flicker: DEFAULT_FLICKER,
            grain: DEFAULT_GRAIN,
            blur: DEFAULT_BLUR,
            gate_weave: DEFAULT_GATE_WEAVE,
            output: DegradeOutput::Damaged,
        }
    }
}

impl Settings {
    fn damage(&self) -> DamageParams {
        DamageParams {
            seed: self.seed,
            blotches: self.blotches as f32,
            scratches: self.scratches as f32,
            flicker: self.flicker as f32,
            grain: self.grain as f32,
            blur: self.blur as f32,
            gate_weave: self.gate_weave as f32,
        }
    }
}

struct State {
    format: PixelFormat,
    frame: WorkFrame,
    mask: Plane,
    degrader: Degrader,
    /// Frames since start or the last flush: damage depends on this, never on timestamps.
    index: u64,
}

#[derive(Default)]
pub struct OldFilmDegrade {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

#[glib::object_subclass]
impl ObjectSubclass for OldFilmDegrade {
    const NAME: &'static str = "GstOldFilmDegrade";
    type Type = super::OldFilmDegrade;
    type ParentType = gst_video::VideoFilter;
}

fn strength(name: &str, nick: &str, what: &str, default: f64) -> glib::ParamSpec {
    glib::ParamSpecDouble::builder(name)
        .nick(nick)
        .blurb(&format!("{what}. 0 is off, 1 is heavy. Range 0-1, default {default}"))
        .minimum(0.0)
        .maximum(1.0)
        .default_value(default)
        .mutable_playing()
        .build()
}

impl ObjectImpl for OldFilmDegrade {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecUInt64::builder("seed")
                    .nick("Seed")
                    .blurb("Seed of all damage: the same seed and input give bit-identical output, whatever the buffer timing. Default 0")
                    .default_value(DEFAULT_SEED)
                    .mutable_playing()
                    .build(),
                strength("blotches", "Blotches", "Dust and dirt: bright and dark soft-edged irregular spots, each living one frame", DEFAULT_BLOTCHES),
                strength("scratches", "Scratches", "Vertical line scratches that persist and wander over many frames", DEFAULT_SCRATCHES),
                strength("flicker", "Flicker", "Per-frame brightness and contrast changes, also uneven across the frame", DEFAULT_FLICKER),
                strength("grain", "Grain", "Film grain, strongest in the mid-tones", DEFAULT_GRAIN),
                strength("blur", "Blur", "Soft focus (Gaussian blur up to about 2 pixels)", DEFAULT_BLUR),
                strength("gate-weave", "Gate weave", "Small per-frame translation of the picture in the gate", DEFAULT_GATE_WEAVE),
                glib::ParamSpecEnum::builder_with_default("output", DegradeOutput::Damaged)
                    .nick("Output")
                    .blurb("damaged: the damaged picture; mask: where blotches (255) and scratches (128) were put, in luma. Default: damaged")
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        // Types are checked by GObject against the ParamSpec before we are called.
        let v = value;
        match pspec.name() {
            "seed" => s.seed = v.get().expect("type checked upstream"),
            "blotches" => s.blotches = v.get().expect("type checked upstream"),
            "scratches" => s.scratches = v.get().expect("type checked upstream"),
            "flicker" => s.flicker = v.get().expect("type checked upstream"),
            "grain" => s.grain = v.get().expect("type checked upstream"),
            "blur" => s.blur = v.get().expect("type checked upstream"),
            "gate-weave" => s.gate_weave = v.get().expect("type checked upstream"),
            "output" => s.output = v.get().expect("type checked upstream"),
            other => unreachable!("unknown property {other}"),
        }
        gst::debug!(CAT, imp = self, "{} set to {:?}", pspec.name(), value);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "seed" => s.seed.to_value(),
            "blotches" => s.blotches.to_value(),
            "scratches" => s.scratches.to_value(),
            "flicker" => s.flicker.to_value(),
            "grain" => s.grain.to_value(),
            "blur" => s.blur.to_value(),
            "gate-weave" => s.gate_weave.to_value(),
            "output" => s.output.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for OldFilmDegrade {}

impl ElementImpl for OldFilmDegrade {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Old film damage",
                "Filter/Effect/Video",
                "Adds seeded, reproducible old-film damage (blotches, line scratches, flicker, grain, blur, gate weave) to clean video, or outputs the damage mask",
                "oldfilmrestore developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(filter_pad_templates);
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for OldFilmDegrade {
    const MODE: gst_base::subclass::BaseTransformMode = gst_base::subclass::BaseTransformMode::NeverInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *lock(&self.state) = None;
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::FlushStop(_) = event.view() {
            if let Some(state) = lock(&self.state).as_mut() {
                state.index = 0;
            }
        }
        self.parent_sink_event(event)
    }
}

impl VideoFilterImpl for OldFilmDegrade {
    fn set_info(
        &self,
        incaps: &gst::Caps,
        _in_info: &gst_video::VideoInfo,
        _outcaps: &gst::Caps,
        _out_info: &gst_video::VideoInfo,
    ) -> Result<(), gst::LoggableError> {
        let (info, format) = parse_caps(incaps).map_err(|m| {
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("{}", m));
            gst::loggable_error!(CAT, "{}", m)
        })?;
        let (w, h) = (info.width() as usize, info.height() as usize);
        let index = lock(&self.state).as_ref().map_or(0, |s| s.index);
        *lock(&self.state) = Some(State {
            format,
            frame: WorkFrame::new(format.geometry(w, h)),
            mask: Plane::new(w, h),
            degrader: Degrader::new(lock(&self.settings).damage()),
            index,
        });
        Ok(())
    }

    fn transform_frame(
        &self,
        inframe: &gst_video::VideoFrameRef<&gst::BufferRef>,
        outframe: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = *lock(&self.settings);
        let mut guard = lock(&self.state);
        let state = guard.as_mut().ok_or(gst::FlowError::NotNegotiated)?;
        let fail = |message: String| {
            gst::element_imp_error!(self, gst::StreamError::Failed, ("{}", message));
            gst::FlowError::Error
        };
        unpack_frame(state.format, inframe, &mut state.frame)
            .map_err(|e| fail(format!("cannot read input frame: {e}")))?;
        state.degrader.set_params(settings.damage());
        let want_mask = settings.output == DegradeOutput::Mask;
        state
            .degrader
            .apply(&mut state.frame, state.index, want_mask.then_some(&mut state.mask));
        state.index += 1;
        if want_mask {
            state.frame.luma.copy_from(&state.mask);
            for c in state.frame.chroma.iter_mut() {
                c.data.fill(0.5);
            }
        }
        if state.format.has_alpha() {
            copy_packed_rows(inframe, outframe, 0);
        }
        pack_frame(state.format, &state.frame, outframe)
            .map_err(|e| fail(format!("cannot write output frame: {e}")))?;
        Ok(gst::FlowSuccess::Ok)
    }
}
