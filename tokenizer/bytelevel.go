package tokenizer

import (
	"unicode/utf8"
)

// byteLevelChars maps each byte to the printable character GPT-2's
// bytes_to_unicode assigns it: printable Latin-1 bytes map to themselves,
// the other 68 bytes to U+0100 onwards in byte order (so ' ' is 'Ġ').
var byteLevelChars, byteLevelInverse = func() ([256]string, map[rune]byte) {
	var chars [256]string
	inv := make(map[rune]byte, 256)
	n := 0
	for b := 0; b < 256; b++ {
		r := rune(b)
		printable := ('!' <= b && b <= '~') || (0xA1 <= b && b <= 0xAC) || (0xAE <= b && b <= 0xFF)
		if !printable {
			r = rune(256 + n)
			n++
		}
		chars[b] = string(r)
		inv[r] = byte(b)
	}
	return chars, inv
}()

// byteLevelEncode maps every byte of s to its byte-level character.
func byteLevelEncode(s string) string {
	buf := make([]byte, 0, 2*len(s))
	for i := 0; i < len(s); i++ {
		buf = append(buf, byteLevelChars[s[i]]...)
	}
	return string(buf)
}

// byteLevelDecode maps byte-level characters back to bytes; characters
// outside the alphabet are kept as their UTF-8 encoding.
func byteLevelDecode(dst []byte, piece string) []byte {
	for _, r := range piece {
		if b, ok := byteLevelInverse[r]; ok {
			dst = append(dst, b)
		} else {
			dst = utf8.AppendRune(dst, r)
		}
	}
	return dst
}
