package hellorfsim

import (
	"fmt"
	"io"
	"strings"
)

// warrantPDF returns a licence certificate for a purchase as a valid PDF
// 1.4 document, with its exact size, without building it in memory: the
// text objects are small strings, and when size asks for more than they
// take, an unreferenced stream object is padded with synthetic bytes (PDF
// readers skip unreferenced objects; the cross-reference table still points
// at every object exactly). size <= 0 means no padding (about 1.5 KB).
func warrantPDF(pu *Purchase, tr *track, size int64, block []byte) (io.Reader, int64) {
	lines := []string{
		"hellorf audio licence certificate",
		fmt.Sprintf("Purchase: %d", pu.ID),
		fmt.Sprintf("Audio: %d %s", tr.ID, tr.Title),
		fmt.Sprintf("Permission: %d (%s) price %s", pu.PermissionID, pu.PermissionType, pu.Price),
		"Licensee: " + pu.WarrantName,
		fmt.Sprintf("Purchased: %s (UTC+8)", pu.CreatedAt.In(cst).Format(stamp)),
	}
	if pu.ThirdUserID != "" {
		lines = append(lines, "Third-party user: "+pu.ThirdUserID)
	}
	var content strings.Builder
	content.WriteString("BT\n/F1 16 Tf\n72 770 Td\n20 TL\n")
	for _, l := range lines {
		content.WriteString("(" + pdfText(l) + ") Tj T*\n")
	}
	content.WriteString("ET\n")

	objs := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
		fmt.Sprintf("<< /Length %d >>\nstream\n%sendstream", content.Len(), content.String()),
		"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
	}
	head := "%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
	var offsets []int64
	var body strings.Builder
	body.WriteString(head)
	for i, o := range objs {
		offsets = append(offsets, int64(body.Len()))
		fmt.Fprintf(&body, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	prefix := body.String()

	// The padding object, if any: its header, P bytes, its end.
	var padHead, padTail string
	var padLen int64
	pos := int64(len(prefix))
	tail := func(padObj bool) string {
		n := len(objs) + 1
		offs := offsets
		if padObj {
			n++
			offs = append(offs[:len(offs):len(offs)], int64(len(prefix)))
		}
		var t strings.Builder
		fmt.Fprintf(&t, "xref\n0 %d\n0000000000 65535 f \n", n)
		for _, o := range offs {
			fmt.Fprintf(&t, "%010d 00000 n \n", o)
		}
		fmt.Fprintf(&t, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n", n)
		return t.String()
	}
	plain := tail(false)
	startxref := fmt.Sprintf("%d\n%%%%EOF\n", pos)
	minimal := pos + int64(len(plain)+len(startxref))
	if size <= minimal {
		return io.MultiReader(strings.NewReader(prefix), strings.NewReader(plain), strings.NewReader(startxref)), minimal
	}
	// Solve for the padding length: the header spells the length, and the
	// xref position depends on it, so iterate until the digits settle.
	padTail = "\nendstream\nendobj\n"
	t := tail(true)
	padLen = size - pos - int64(len(t))
	for range 4 {
		padHead = fmt.Sprintf("%d 0 obj\n<< /Length %d >>\nstream\n", len(objs)+1, padLen)
		xrefAt := pos + int64(len(padHead)) + padLen + int64(len(padTail))
		startxref = fmt.Sprintf("%d\n%%%%EOF\n", xrefAt)
		total := xrefAt + int64(len(t)+len(startxref))
		padLen -= total - size
	}
	padLen = max(padLen, 0)
	padHead = fmt.Sprintf("%d 0 obj\n<< /Length %d >>\nstream\n", len(objs)+1, padLen)
	xrefAt := pos + int64(len(padHead)) + padLen + int64(len(padTail))
	startxref = fmt.Sprintf("%d\n%%%%EOF\n", xrefAt)
	total := xrefAt + int64(len(t)+len(startxref))
	pad := &synthetic{size: padLen, seed: int64(pu.ID), block: block}
	return io.MultiReader(strings.NewReader(prefix), strings.NewReader(padHead), pad,
		strings.NewReader(padTail), strings.NewReader(t), strings.NewReader(startxref)), total
}

// pdfText makes a PDF literal string of ASCII text: the standard Helvetica
// font has no CJK glyphs, so other characters become '?'.
func pdfText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '(' || r == ')' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r >= 0x20 && r < 0x7f:
			b.WriteRune(r)
		default:
			b.WriteByte('?')
		}
	}
	return b.String()
}
