//! zoomvtools (the Rust port of MVTools) driven like `MSuper` + `MAnalyse` + `MCompensate`, on
//! one 8-bit grey plane.

use crate::field::Field;
use std::num::{NonZeroU8, NonZeroUsize};
use zoomvtools::{
    Analyse, AnalyseOptions, ColorFamily, Compensate, CompensateOptions, DctMode, FakeGroupOfPlanes, FramePlanes,
    FramePlanesMut, FrameView, MVAnalysisData, MvsOutput, PlaneRef, ReduceFilter, Resolution, SampleType,
    SceneChangeBehavior, Subpel, SubpelMethod, Super, SuperOptions, VideoFormat, VideoInfo, MV_DEFAULT_SCD1,
    MV_DEFAULT_SCD2,
};

/// The MVTools settings one row of the tables uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    pub pel: Subpel,
    /// Block overlap in pixels (blocks are 8x8).
    pub overlap: usize,
    /// Map the neighbour's brightness onto the centre's with our quantile fit before the search
    /// (MVTools has no such step; `false` is MVTools as practitioners run it).
    pub tone: bool,
    /// MVTools' `dct`: 0 plain SAD; 2 mixes in DCT-domain differences weighted by the mean luma
    /// change between the frames (MVTools' own answer to flicker and fades).
    pub dct: DctMode,
}

impl Config {
    pub fn label(&self) -> String {
        format!(
            "zoomvtools pel {} overlap {}{}{}",
            u8::from(self.pel),
            self.overlap,
            if self.dct == DctMode::Spatial {
                String::new()
            } else {
                format!(" dct {}", self.dct as u8)
            },
            if self.tone { " + our tone map" } else { "" }
        )
    }
}

/// MVTools' defaults where the host does not set them: `MSuper(hpad=16, vpad=16, pel, sharp=2,
/// rfilter=2)`, `MAnalyse(blksize=8, overlap, search=4 (hex), searchparam=2, truemotion=true)`,
/// `MCompensate(thsad=10000)`. MCompensate's scene-change test (`thscd1=400, thscd2=130`) is
/// off here (`thscd1` at its maximum) so that its compensation is scored on every pair; how
/// often the default test would have fired is reported by [`Zoom::scene_change`].
const PAD: usize = 16;
const THSAD: u64 = 10_000;
const THSCD1_OFF: u64 = 8 * 8 * 255;

pub struct Zoom {
    pub config: Config,
    width: usize,
    height: usize,
    superclip: Super,
    super_size: Resolution,
    analyse: Analyse,
    compensate: Compensate,
    analysis: MVAnalysisData,
}

fn grey8(width: usize, height: usize, frames: usize) -> VideoInfo {
    VideoInfo {
        format: VideoFormat {
            color_family: ColorFamily::Gray,
            sample_type: SampleType::Integer,
            bits_per_sample: NonZeroU8::new(8).expect("non-zero"),
            bytes_per_sample: NonZeroU8::new(1).expect("non-zero"),
            sub_sampling_w: 0,
            sub_sampling_h: 0,
        },
        resolution: Resolution { width, height },
        num_frames: frames,
    }
}

fn pitch(width: usize) -> (NonZeroUsize, Option<NonZeroUsize>, Option<NonZeroUsize>) {
    (NonZeroUsize::new(width).expect("non-zero width"), None, None)
}

fn view(data: &[u8], width: usize) -> FrameView<'_, u8> {
    FrameView::new(FramePlanes::new([Some(PlaneRef::new(data)), None, None]), pitch(width))
}

impl Zoom {
    pub fn new(width: usize, height: usize, frames: usize, config: Config) -> anyhow::Result<Self> {
        let source = grey8(width, height, frames);
        let superclip = Super::new(
            source,
            SuperOptions {
                hpad: PAD,
                vpad: PAD,
                pel: config.pel,
                levels: 0,
                chroma: false,
                sharp: SubpelMethod::Wiener,
                rfilter: ReduceFilter::Bilinear,
            },
        )?;
        let super_size = superclip.output_resolution();
        let analyse = Analyse::new(
            grey8(super_size.width, super_size.height, frames),
            superclip.super_info(),
            AnalyseOptions {
                blk_size_x: Some(8),
                blk_size_y: Some(8),
                overlap_x: Some(config.overlap),
                overlap_y: Some(config.overlap),
                dct_mode: Some(config.dct),
                ..AnalyseOptions::default()
            },
        )?;
        let analysis = analyse.analysis_data();
        let compensate = Compensate::new(
            source,
            super_size.width,
            superclip.super_info(),
            analysis,
            CompensateOptions {
                scene_change_behavior: SceneChangeBehavior::CurrentFrame,
                thsad: THSAD,
                fields: false,
                time_percent: 100.0,
                thscd1: THSCD1_OFF,
                thscd2: MV_DEFAULT_SCD2,
            },
        )?;
        Ok(Zoom {
            config,
            width,
            height,
            superclip,
            super_size,
            analyse,
            compensate,
            analysis,
        })
    }

    /// `MSuper` of one frame: the padded pyramid (and, for pel > 1, the interpolated planes).
    pub fn render_super(&self, luma: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut out = vec![0u8; self.super_size.width * self.super_size.height];
        let mut planes = FramePlanesMut::new([Some(&mut out[..]), None, None]);
        self.superclip
            .render_frame(&view(luma, self.width), None, &mut planes, pitch(self.super_size.width))?;
        Ok(out)
    }

    /// `MAnalyse` of the centre against the neighbour (both super frames): vectors from centre
    /// blocks to the neighbour.
    pub fn analyse(&self, centre: &[u8], neighbour: &[u8]) -> anyhow::Result<MvsOutput> {
        let (c, n) = (
            view(centre, self.super_size.width),
            view(neighbour, self.super_size.width),
        );
        Ok(self.analyse.analyse_frame(0, &c, Some(&n), None, None)?.vectors)
    }

    /// The finest level of `vectors` as a [`Field`].
    pub fn field(&self, vectors: &MvsOutput) -> anyhow::Result<Field> {
        let a = &self.analysis;
        let (bx, by) = (a.blk_x.get(), a.blk_y.get());
        let finest = finest_level(&vectors.block_data, a.level_count, bx * by)?;
        let vectors = finest.iter().map(|&(x, y, _)| (x, y)).collect();
        Ok(Field {
            block: a.blk_size_x.get(),
            step: a.blk_size_x.get() - a.overlap_x,
            pel: i32::from(u8::from(a.pel)),
            blocks_x: bx,
            blocks_y: by,
            vectors,
        })
    }

    /// Whether MVTools' default scene-change test (`thscd1=400, thscd2=130`, as MCompensate and
    /// MDegrain apply it) calls this pair a scene change: more than 130/256 of the blocks match
    /// worse than a SAD of 400 (per 8x8 block, 8 bits). MCompensate then outputs the current
    /// frame uncompensated, and MDegrain leaves the neighbour out.
    pub fn scene_change(&self, vectors: &MvsOutput) -> anyhow::Result<bool> {
        let a = &self.analysis;
        let blocks = a.blk_x.get() * a.blk_y.get();
        let finest = finest_level(&vectors.block_data, a.level_count, blocks)?;
        let bad = finest.iter().filter(|v| v.2 > MV_DEFAULT_SCD1 as i64).count();
        Ok(bad > (MV_DEFAULT_SCD2 as usize * blocks) / 256)
    }

    /// `MCompensate` of the neighbour (its super frame) with `vectors`: MVTools' own
    /// compensation (overlapped blocks windowed and blended; sub-pixel samples from the super
    /// frame's interpolated planes). Where MVTools falls back to the "current" frame (a block
    /// above `thsad`, or a scene change) it gets the neighbour unmoved, never the centre.
    pub fn compensate(&self, neighbour: &[u8], vectors: &MvsOutput) -> anyhow::Result<Vec<u8>> {
        let mut fake = FakeGroupOfPlanes::new(&self.analysis);
        fake.update(&vectors.block_data)?;
        let mut out = vec![0u8; self.width * self.height];
        let mut planes = FramePlanesMut::new([Some(&mut out[..]), None, None]);
        let n = view(neighbour, self.super_size.width);
        self.compensate
            .render_frame(&n, Some(&n), &mut planes, pitch(self.width), &fake, 0)?;
        Ok(out)
    }
}

/// Reads the finest level's vectors out of MVTools' packed layout: two `i32` (size, validity),
/// then each level from the coarsest, as an `i32` byte count (itself included) and one
/// `{x: i32, y: i32, sad: i64}` per block, little-endian.
fn finest_level(data: &[u8], levels: usize, blocks: usize) -> anyhow::Result<Vec<(i32, i32, i64)>> {
    let bytes_at = |at: usize, n: usize| {
        data.get(at..at + n)
            .ok_or_else(|| anyhow::anyhow!("vector data ends at {at}"))
    };
    let i32_at = |at: usize| -> anyhow::Result<i32> { Ok(i32::from_le_bytes(bytes_at(at, 4)?.try_into()?)) };
    let i64_at = |at: usize| -> anyhow::Result<i64> { Ok(i64::from_le_bytes(bytes_at(at, 8)?.try_into()?)) };
    let mut at = 8;
    for _ in 1..levels {
        at += usize::try_from(i32_at(at)?)?;
    }
    let size = usize::try_from(i32_at(at)?)?;
    anyhow::ensure!(
        size == 4 + 16 * blocks,
        "finest level holds {size} bytes for {blocks} blocks"
    );
    (0..blocks)
        .map(|b| {
            let v = at + 4 + 16 * b;
            Ok((i32_at(v)?, i32_at(v + 4)?, i64_at(v + 8)?))
        })
        .collect()
}
