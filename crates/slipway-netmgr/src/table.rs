//! virsh's table layout, as libvirt's `vsh-table.c` draws it, so every
//! table slipway prints is byte-identical to virsh's for the same rows:
//! `net-list` here, `net-dhcp-leases` by the backend that keeps the leases
//! (`slipway_hostnet::leases::table`, its columns and rows).

/// Formats `header` and `rows` as virsh does: each cell is a space and the
/// text, padded to the column's width plus two spaces except in the last
/// column; the dash row is every column's width plus three (so it is longer
/// than the header when the last column holds values wider than its title).
pub fn vsh_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut String, cells: &[&str]| {
        for (i, c) in cells.iter().enumerate() {
            out.push(' ');
            out.push_str(c);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        out.push('\n');
    };
    let mut out = String::new();
    line(&mut out, header);
    out.push_str(&"-".repeat(widths.iter().map(|w| w + 3).sum()));
    out.push('\n');
    for r in rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&mut out, &cells);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// virsh 9's `net-list` of the test driver's `default` network.
    #[test]
    fn net_list_layout() {
        let rows = vec![vec![
            "default".to_string(),
            "active".into(),
            "yes".into(),
            "yes".into(),
        ]];
        assert_eq!(
            vsh_table(&["Name", "State", "Autostart", "Persistent"], &rows),
            " Name      State    Autostart   Persistent\n\
             --------------------------------------------\n \
             default   active   yes         yes\n"
        );
    }

    /// A last column wider than its title lengthens the dash row past the
    /// header.
    #[test]
    fn wide_last_column() {
        let rows = vec![vec!["a".to_string(), "0123456789".into()]];
        let t = vsh_table(&["X", "Y"], &rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], " X   Y");
        assert_eq!(lines[1], "-".repeat(4 + 13));
        assert_eq!(lines[2], " a   0123456789");
        assert_eq!(vsh_table(&["A"], &[]), " A\n----\n");
    }
}
