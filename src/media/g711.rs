//! ITU-T G.711 µ-law (PCMU) and A-law (PCMA) companding.
//!
//! Sits between the RTP payload and everything that wants linear audio: the caller's frames are
//! decoded here for the in-band DTMF detector and the recorder, and prompts are encoded here once at
//! start-up. Decoding goes through 256-entry tables built at compile time; encoding is a few integer
//! operations per sample. Nothing here allocates.

/// Samples in one 20 ms frame at 8 kHz, which is also the G.711 payload size in bytes.
pub const FRAME_SAMPLES: usize = 160;

/// µ-law bias added before the segment search (G.711 §3.1, expressed on a 16-bit scale: 33 << 2).
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude µ-law can represent once the bias is added without overflowing segment 7.
const ULAW_CLIP: i32 = 32635;

/// Linear value of every µ-law code, indexed by the code byte.
static ULAW_TO_LINEAR: [i16; 256] = build_ulaw_table();
/// Linear value of every A-law code, indexed by the code byte.
static ALAW_TO_LINEAR: [i16; 256] = build_alaw_table();

const fn ulaw_code_to_linear(code: u8) -> i16 {
    // Codes are transmitted inverted (G.711 Table 2) so that silence is 0xFF, not 0x00.
    let u = !code;
    let exponent = ((u >> 4) & 0x07) as u32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn alaw_code_to_linear(code: u8) -> i16 {
    // Even bits are inverted on the wire (G.711 Table 1, the 0x55 pattern).
    let a = code ^ 0x55;
    let segment = ((a >> 4) & 0x07) as u32;
    let mantissa = (a & 0x0F) as i32;
    // Decode to the middle of the quantisation interval, on a 16-bit scale (13-bit value << 3).
    let magnitude = match segment {
        0 => (mantissa << 4) + 8,
        _ => ((mantissa << 4) + 0x108) << (segment - 1),
    };
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn build_ulaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = ulaw_code_to_linear(i as u8);
        i += 1;
    }
    table
}

const fn build_alaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = alaw_code_to_linear(i as u8);
        i += 1;
    }
    table
}

/// Encodes one 16-bit linear sample as a µ-law code byte; magnitudes above 32635 are clipped.
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let value = i32::from(sample);
    let sign: u8 = if value < 0 { 0x80 } else { 0 };
    let biased = value.abs().min(ULAW_CLIP) + ULAW_BIAS;
    // biased is in [132, 32767]: its top set bit is bit 7..=14, which gives segments 0..=7.
    let top_bit = 31 - biased.leading_zeros() as i32;
    let exponent = top_bit - 7;
    let mantissa = (biased >> (exponent + 3)) & 0x0F;
    !(sign | ((exponent as u8) << 4) | mantissa as u8)
}

/// Decodes one µ-law code byte to a 16-bit linear sample (table lookup).
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_TO_LINEAR[usize::from(code)]
}

/// Encodes one 16-bit linear sample as an A-law code byte (the full 16-bit range is representable).
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    // A-law works on 13 bits; the arithmetic shift keeps the sign.
    let value = i32::from(sample) >> 3;
    let (mask, magnitude) = if value >= 0 {
        (0xD5u8, value)
    } else {
        (0x55u8, -value - 1)
    };
    // magnitude is in [0, 4095]; segment 0 covers 0..32, segment s >= 1 covers [16 << s, 32 << s).
    let (segment, mantissa) = if magnitude < 32 {
        (0, magnitude >> 1)
    } else {
        let segment = 31 - magnitude.leading_zeros() as i32 - 4;
        (segment, (magnitude >> segment) & 0x0F)
    };
    (((segment as u8) << 4) | mantissa as u8) ^ mask
}

/// Decodes one A-law code byte to a 16-bit linear sample (table lookup).
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_TO_LINEAR[usize::from(code)]
}

/// Encodes `min(input.len(), out.len())` samples as µ-law and returns how many were written.
pub fn encode_ulaw(input: &[i16], out: &mut [u8]) -> usize {
    let n = input.len().min(out.len());
    for (o, &s) in out[..n].iter_mut().zip(&input[..n]) {
        *o = linear_to_ulaw(s);
    }
    n
}

/// Decodes `min(input.len(), out.len())` µ-law bytes and returns how many samples were written.
pub fn decode_ulaw(input: &[u8], out: &mut [i16]) -> usize {
    let n = input.len().min(out.len());
    for (o, &c) in out[..n].iter_mut().zip(&input[..n]) {
        *o = ulaw_to_linear(c);
    }
    n
}

/// Encodes `min(input.len(), out.len())` samples as A-law and returns how many were written.
pub fn encode_alaw(input: &[i16], out: &mut [u8]) -> usize {
    let n = input.len().min(out.len());
    for (o, &s) in out[..n].iter_mut().zip(&input[..n]) {
        *o = linear_to_alaw(s);
    }
    n
}

/// Decodes `min(input.len(), out.len())` A-law bytes and returns how many samples were written.
pub fn decode_alaw(input: &[u8], out: &mut [i16]) -> usize {
    let n = input.len().min(out.len());
    for (o, &c) in out[..n].iter_mut().zip(&input[..n]) {
        *o = alaw_to_linear(c);
    }
    n
}

/// The two audio codecs ivrd offers: G.711 µ-law and A-law (RFC 3551 §4.5.14, 8 kHz, one channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Codec {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8 (the usual choice on Chinese trunks).
    Pcma,
}

impl Codec {
    /// Both codecs, in the order ivrd lists them when it has no preference.
    pub const ALL: [Codec; 2] = [Codec::Pcmu, Codec::Pcma];

    /// The static RTP payload type from RFC 3551 Table 4.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The codec for a static payload type, if it is one of ours.
    pub fn from_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The encoding name used in SDP `a=rtpmap` (RFC 3551 Table 4).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The RTP clock rate in Hz (8000 for both).
    pub fn clock_rate(self) -> u32 {
        8000
    }

    /// The code byte for a zero sample: what a frame of silence is filled with.
    pub fn silence_byte(self) -> u8 {
        match self {
            Codec::Pcmu => 0xFF,
            Codec::Pcma => 0xD5,
        }
    }

    /// A whole frame of [`Self::silence_byte`], to send or decode without building one.
    pub fn silence_frame(self) -> &'static [u8; FRAME_SAMPLES] {
        static PCMU: [u8; FRAME_SAMPLES] = [0xFF; FRAME_SAMPLES];
        static PCMA: [u8; FRAME_SAMPLES] = [0xD5; FRAME_SAMPLES];
        match self {
            Codec::Pcmu => &PCMU,
            Codec::Pcma => &PCMA,
        }
    }

    /// Encodes linear samples into `out`; returns how many bytes were written (the shorter length).
    pub fn encode(self, input: &[i16], out: &mut [u8]) -> usize {
        match self {
            Codec::Pcmu => encode_ulaw(input, out),
            Codec::Pcma => encode_alaw(input, out),
        }
    }

    /// Decodes code bytes into `out`; returns how many samples were written (the shorter length).
    pub fn decode(self, input: &[u8], out: &mut [i16]) -> usize {
        match self {
            Codec::Pcmu => decode_ulaw(input, out),
            Codec::Pcma => decode_alaw(input, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values_from_g711() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(1000), 0xCE);
        assert_eq!(linear_to_ulaw(-1000), 0x4E);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-8), 0x55);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        // Largest µ-law magnitude: ((15 << 3) + 132) << 7 - 132.
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        // Largest A-law magnitude: ((15 << 4) + 0x108) << 6.
        assert_eq!(alaw_to_linear(0xAA), 32256);
    }

    #[test]
    fn ulaw_round_trip_error_is_within_half_a_step() {
        for x in i16::MIN..=i16::MAX {
            let y = i32::from(ulaw_to_linear(linear_to_ulaw(x)));
            let x = i32::from(x);
            if x.abs() > ULAW_CLIP {
                assert_eq!(y.abs(), 32124, "clipped sample {x}");
                assert_eq!(y.signum(), x.signum());
            } else {
                // In segment e the step is 2^(e+3) and (|x| + 132) >= 2^(e+7), so half a step
                // is at most (|x| + 132) / 32.
                assert!((y - x).abs() * 32 <= x.abs() + ULAW_BIAS, "x={x} y={y}");
            }
        }
    }

    #[test]
    fn alaw_round_trip_error_is_within_half_a_step() {
        for x in i16::MIN..=i16::MAX {
            let y = i32::from(alaw_to_linear(linear_to_alaw(x)));
            let x = i32::from(x);
            assert!((y - x).abs() * 32 <= x.abs().max(256), "x={x} y={y}");
            assert!(
                y.signum() == x.signum() || x == 0 || x.abs() < 8,
                "x={x} y={y}"
            );
        }
    }

    #[test]
    fn every_code_decodes_and_re_encodes_to_itself() {
        for code in 0..=255u8 {
            let back = linear_to_ulaw(ulaw_to_linear(code));
            // 0x7F is "negative zero"; it decodes to 0, which encodes as 0xFF.
            let want = if code == 0x7F { 0xFF } else { code };
            assert_eq!(back, want, "µ-law code {code:#04x}");
            assert_eq!(
                linear_to_alaw(alaw_to_linear(code)),
                code,
                "A-law code {code:#04x}"
            );
        }
    }

    #[test]
    fn decode_tables_are_monotonic_in_magnitude() {
        // Within each sign half, larger segment/mantissa means larger magnitude: catches a table
        // built with the wrong bit order even where the round trip would still hold.
        for code in 1..128u8 {
            let a = |c: u8| i32::from(alaw_to_linear((c | 0x80) ^ 0x55));
            assert!(a(code) > a(code - 1));
            let u = |c: u8| i32::from(ulaw_to_linear(!c));
            assert!(u(code) > u(code - 1));
        }
    }

    #[test]
    fn frame_helpers_stop_at_the_shorter_buffer() {
        let input = [0i16, 1000, -1000, 0];
        let mut out = [0u8; 3];
        assert_eq!(encode_ulaw(&input, &mut out), 3);
        assert_eq!(out, [0xFF, 0xCE, 0x4E]);
        let mut pcm = [7i16; 5];
        assert_eq!(decode_alaw(&[0xD5, 0x55], &mut pcm), 2);
        assert_eq!(pcm, [8, -8, 7, 7, 7]);
    }

    #[test]
    fn codec_dispatch_matches_the_free_functions() {
        let samples: Vec<i16> = (0..FRAME_SAMPLES as i32)
            .map(|i| (i * 397 - 30000) as i16)
            .collect();
        for codec in Codec::ALL {
            assert_eq!(Codec::from_payload_type(codec.payload_type()), Some(codec));
            let mut bytes = [0u8; FRAME_SAMPLES];
            assert_eq!(codec.encode(&samples, &mut bytes), FRAME_SAMPLES);
            let mut back = [0i16; FRAME_SAMPLES];
            assert_eq!(codec.decode(&bytes, &mut back), FRAME_SAMPLES);
            for (i, &s) in samples.iter().enumerate() {
                let (e, d) = match codec {
                    Codec::Pcmu => (linear_to_ulaw(s), ulaw_to_linear(bytes[i])),
                    Codec::Pcma => (linear_to_alaw(s), alaw_to_linear(bytes[i])),
                };
                assert_eq!(bytes[i], e);
                assert_eq!(back[i], d);
            }
            let mut zero = [0i16; 1];
            codec.decode(&[codec.silence_byte()], &mut zero);
            assert!(zero[0].abs() <= 8);
            assert!(
                codec
                    .silence_frame()
                    .iter()
                    .all(|&b| b == codec.silence_byte())
            );
        }
        assert_eq!(Codec::Pcmu.name(), "PCMU");
        assert_eq!(Codec::Pcma.name(), "PCMA");
        assert_eq!(Codec::Pcma.payload_type(), 8);
        assert_eq!(Codec::from_payload_type(101), None);
    }
}
