/* Unicode Script property of a char, for the UnicodeScripts pre-tokenizer, from PCRE2's
 * tables (\p{sc:Name}: the Script property, not Script_Extensions). A char's script is found
 * once, by trying the scripts in turn, and kept in a table of all code points allocated on
 * first use; chars no script claims (unassigned ones) are 0, "Any" in HF's terms. HF's own
 * table is older (SentencePiece's generator), so chars assigned since can differ. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

static const char *const NAMES[] = {
	"Adlam", "Ahom", "Anatolian_Hieroglyphs", "Arabic", "Armenian", "Avestan", "Balinese", "Bamum",
	"Bassa_Vah", "Batak", "Bengali", "Bhaiksuki", "Bopomofo", "Brahmi", "Braille", "Buginese", "Buhid",
	"Canadian_Aboriginal", "Carian", "Caucasian_Albanian", "Chakma", "Cham", "Cherokee", "Chorasmian",
	"Common", "Coptic", "Cuneiform", "Cypriot", "Cypro_Minoan", "Cyrillic", "Deseret", "Devanagari",
	"Dives_Akuru", "Dogra", "Duployan", "Egyptian_Hieroglyphs", "Elbasan", "Elymaic", "Ethiopic",
	"Georgian", "Glagolitic", "Gothic", "Grantha", "Greek", "Gujarati", "Gunjala_Gondi", "Gurmukhi",
	"Han", "Hangul", "Hanifi_Rohingya", "Hanunoo", "Hatran", "Hebrew", "Hiragana", "Imperial_Aramaic",
	"Inherited", "Inscriptional_Pahlavi", "Inscriptional_Parthian", "Javanese", "Kaithi", "Kannada",
	"Katakana", "Kawi", "Kayah_Li", "Kharoshthi", "Khitan_Small_Script", "Khmer", "Khojki", "Khudawadi",
	"Lao", "Latin", "Lepcha", "Limbu", "Linear_A", "Linear_B", "Lisu", "Lycian", "Lydian", "Mahajani",
	"Makasar", "Malayalam", "Mandaic", "Manichaean", "Marchen", "Masaram_Gondi", "Medefaidrin",
	"Meetei_Mayek", "Mende_Kikakui", "Meroitic_Cursive", "Meroitic_Hieroglyphs", "Miao", "Modi",
	"Mongolian", "Mro", "Multani", "Myanmar", "Nabataean", "Nag_Mundari", "Nandinagari", "New_Tai_Lue",
	"Newa", "Nko", "Nushu", "Nyiakeng_Puachue_Hmong", "Ogham", "Ol_Chiki", "Old_Hungarian", "Old_Italic",
	"Old_North_Arabian", "Old_Permic", "Old_Persian", "Old_Sogdian", "Old_South_Arabian", "Old_Turkic",
	"Old_Uyghur", "Oriya", "Osage", "Osmanya", "Pahawh_Hmong", "Palmyrene", "Pau_Cin_Hau", "Phags_Pa",
	"Phoenician", "Psalter_Pahlavi", "Rejang", "Runic", "Samaritan", "Saurashtra", "Sharada", "Shavian",
	"Siddham", "SignWriting", "Sinhala", "Sogdian", "Sora_Sompeng", "Soyombo", "Sundanese",
	"Syloti_Nagri", "Syriac", "Tagalog", "Tagbanwa", "Tai_Le", "Tai_Tham", "Tai_Viet", "Takri", "Tamil",
	"Tangsa", "Tangut", "Telugu", "Thaana", "Thai", "Tibetan", "Tifinagh", "Tirhuta", "Toto",
	"Ugaritic", "Vai", "Vithkuqi", "Wancho", "Warang_Citi", "Yezidi", "Yi", "Zanabazar_Square"};
#define NSCRIPTS (sizeof NAMES / sizeof NAMES[0])

static pcre2_code *re[NSCRIPTS];
static uint8_t *table; /* code point -> script index + 2 (1: Any), 0: not looked up yet */
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void)
{
	char pat[64];
	int ec;
	PCRE2_SIZE eo;
	/* Names this PCRE2 does not know (an older Unicode) are skipped. */
	for (size_t i = 0; i < NSCRIPTS; i++) {
		int n = snprintf(pat, sizeof pat, "\\p{sc:%s}", NAMES[i]);
		re[i] = pcre2_compile((PCRE2_SPTR)pat, (size_t)n, PCRE2_UTF | PCRE2_ANCHORED, &ec, &eo, NULL);
	}
	table = calloc(0x110000, 1);
}

/* 0: Any (unassigned); otherwise an id equal for chars of one script. */
int tok_script_of(uint32_t cp)
{
	uint8_t v;
	char u[4];
	size_t n;
	pcre2_match_data *md;
	pthread_once(&once, init);
	if (cp >= 0x110000)
		return 0;
	if (table && (v = __atomic_load_n(&table[cp], __ATOMIC_RELAXED)))
		return v - 1;
	n = tok_utf8_enc(cp, u);
	v = 1;
	if ((md = pcre2_match_data_create(1, NULL))) {
		for (size_t i = 0; i < NSCRIPTS; i++)
			if (re[i] && pcre2_match(re[i], (PCRE2_SPTR)u, n, 0, 0, md, NULL) > 0) {
				v = (uint8_t)(i + 2);
				break;
			}
		pcre2_match_data_free(md);
	}
	if (table)
		__atomic_store_n(&table[cp], v, __ATOMIC_RELAXED);
	return v - 1;
}

static int han, hira, kata;
static pthread_once_t once_kana = PTHREAD_ONCE_INIT;

static void init_kana(void)
{
	han = tok_script_of(0x4E00);  /* 一 */
	hira = tok_script_of(0x3042); /* あ */
	kata = tok_script_of(0x30A2); /* ア */
}

/* HF's fixed_script: Hiragana, Katakana and U+30FC count as Han; ' ' as Any. */
int tok_script_fixed(uint32_t cp)
{
	int s;
	if (cp == ' ')
		return 0;
	pthread_once(&once_kana, init_kana);
	if (cp == 0x30FC)
		return han;
	s = tok_script_of(cp);
	return s == hira || s == kata ? han : s;
}
