import Testing
@testable import KVM
