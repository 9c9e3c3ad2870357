//! Deterministic test data shared by the benches: pseudo-English text and random bytes.

/// xorshift64: fast, deterministic, good enough to defeat compression.
pub struct XorShift(u64);

impl XorShift {
    /// A generator; any seed works (zero is mapped to a non-zero state).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `len` incompressible bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Common English words, most frequent first (the picker favours the start of the list).
const WORDS: &str = "\
    the of and to a in is it that was for on are with as he be at by this had not but from \
    or have an they which one you were all her she there would their we him been has when \
    who will no more if out so up said what its about than into them can only other time new \
    some could these two may first then do any like my now over such our man me even most \
    made after also did many off before must well back through years much where your way \
    down should because each just those people how too little state good very make world \
    still see own men work long here get both between life being under never day same \
    another know while last might us great old year come since against right came take used \
    three himself few house use during without again place around however home small found \
    thought went say part once general high upon school every does got united left number \
    course war until always away something fact water though less public put think almost \
    hand enough far took head yet government system better set told nothing night end why \
    called didn't eyes find going look asked later knew point next program city business \
    give group toward young days let room president side social present given several order \
    national possible rather second face per among form important often things looked early \
    white case john become large big need four within felt along children saw best church \
    ever least power development light thing seemed family interest want members mind \
    country area others although turned done open god service certain kind problem began \
    different door thus help sense means whole matter perhaps itself york times law human \
    line above name example action company hands local show whether five history gave today \
    either act feet across taken past quite anything having seen death experience body word \
    half really field am car words already themselves information tell together college \
    shall money period held keep sure free seems political real behind question making \
    office brought whose special heard major problems ago became federal moment study \
    available known result street economic boy position reason change south board individual \
    job society areas west close turn love community true court force full seem wife future \
    age voice center woman control common policy necessary following front sometimes six \
    girl clear further land run students provide feel party able mother music education \
    university child effect level stood military town short morning total outside rate \
    figure class art century washington north usually leave therefore evidence plan million \
    sound black strong hard various says";

/// `len` bytes of pseudo-English: sentences of skewed-frequency words, commas, paragraphs.
/// zstd compresses it about as well as ordinary prose.
pub fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    let dict: Vec<&[u8]> = WORDS.split_whitespace().map(str::as_bytes).collect();
    let mut rng = XorShift::new(seed);
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        let sentences = 2 + rng.below(7);
        for _ in 0..sentences {
            let words = 4 + rng.below(15);
            for w in 0..words {
                // The smaller of two uniform picks: frequent words come up far more often.
                let word = dict[rng.below(dict.len()).min(rng.below(dict.len()))];
                if w == 0 {
                    out.push(word[0].to_ascii_uppercase());
                    out.extend_from_slice(&word[1..]);
                } else {
                    out.push(b' ');
                    out.extend_from_slice(word);
                }
                if w + 1 < words && rng.below(12) == 0 {
                    out.push(b',');
                }
            }
            out.extend_from_slice(if rng.below(10) == 0 { b"? " } else { b". " });
        }
        out.pop();
        out.extend_from_slice(b"\n\n");
    }
    out.truncate(len);
    out
}
