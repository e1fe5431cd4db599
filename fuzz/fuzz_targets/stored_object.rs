//! Stored records as the store reads them back: `layout::decode_object`
//! (objects and hints), `layout::object_is_deleted` (the listing shortcut)
//! and `layout::decode_props`. Corrupt bytes are an error, never a panic;
//! an object that decodes satisfies the dvv invariants, agrees with its
//! header flag, and survives what a read does with it (merging, showing
//! live siblings and vtags, last-write-wins resolution) with the merge laws
//! intact. Debug assertions are on in fuzz builds, so the dvv module's own
//! invariant checks run too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::layout;

fuzz_target!(|data: &[u8]| {
    let decoded = layout::decode_object("fuzz", data);
    let flagged_deleted = layout::object_is_deleted("fuzz", data);
    if let Ok(object) = decoded {
        assert!(object.is_well_formed());
        assert!(!object.siblings.is_empty());
        assert_eq!(flagged_deleted.ok(), Some(object.is_deleted()));
        assert_eq!(object.merge(&object), object, "merge is idempotent");
        let live = object.live_siblings().count();
        assert_eq!(live == 0, object.is_deleted());
        for sibling in &object.siblings {
            assert!(!sibling.vtag().is_empty());
        }
        let mut resolved = object.clone();
        resolved.resolve_last_write_wins();
        assert!(resolved.is_well_formed());
        assert!(resolved.siblings.len() <= 1);
        let merged = object.merge(&resolved);
        assert_eq!(merged, resolved.merge(&object), "merge is commutative");
        assert!(merged.is_well_formed());
    }
    let _ = layout::decode_props(b"bucket", data);
});
