package store

// StopRenewing stops a lease's renewals without releasing it or marking it
// lost: the holder looks alive to itself but paused to everyone else (a long
// GC pause, a frozen VM), which is what fencing must defend against.
func StopRenewing(l *Lease) { l.stopRenewing() }
